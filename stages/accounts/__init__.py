"""One account as people look at it: its fit, committee, engagement, timeline, CRM record and
campaigns, assembled once for `abm accounts show` and the console's account page."""
