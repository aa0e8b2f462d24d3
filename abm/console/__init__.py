"""The console: accounts, campaigns, people and suppressions in the browser, for marketing
ops. Server-rendered from Jinja templates by the same web app as the webhooks and the
unsubscribe pages (`abm serve`), under /console, behind a sign-in (abm/console/access.py)."""
