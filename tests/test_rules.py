"""Sending windows in the person's own time zone (DST included) and frequency caps."""

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from core.campaign_file import Cap, SendingWindow
from stages.delivery.pacing import cap_frees_at, local_zone, next_window_opening

WEEKDAYS_9_TO_5 = SendingWindow(
    days=["mon", "tue", "wed", "thu", "fri"], start=time(9), end=time(17), timezone="UTC"
)
BERLIN = ZoneInfo("Europe/Berlin")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_the_persons_zone_wins_then_the_accounts_country_then_the_campaigns():
    assert local_zone("Asia/Tokyo", "DE", "UTC").key == "Asia/Tokyo"
    assert local_zone(None, "de", "UTC").key == "Europe/Berlin"
    assert local_zone("Not/AZone", "US", "UTC").key == "America/New_York"
    assert local_zone(None, None, "Europe/London").key == "Europe/London"


def test_inside_the_window_a_message_may_go_now():
    # Wednesday 2026-11-25 10:00 in Berlin is 09:00 UTC
    assert next_window_opening(utc(2026, 11, 25, 9), WEEKDAYS_9_TO_5, BERLIN) is None


def test_before_the_window_it_waits_for_nine_local_time():
    # 07:00 Berlin (06:00 UTC) -> 09:00 Berlin = 08:00 UTC the same day
    assert next_window_opening(utc(2026, 11, 25, 6), WEEKDAYS_9_TO_5, BERLIN) == utc(
        2026, 11, 25, 8
    )


def test_after_friday_closing_it_waits_for_monday():
    # Friday 2026-11-27 18:00 Berlin -> Monday 2026-11-30 09:00 Berlin (08:00 UTC)
    assert next_window_opening(utc(2026, 11, 27, 17), WEEKDAYS_9_TO_5, BERLIN) == utc(
        2026, 11, 30, 8
    )


def test_the_same_local_nine_oclock_across_the_spring_dst_change():
    # Berlin moves to summer time on Sunday 2026-03-29: Monday 09:00 is then 07:00 UTC
    friday_evening = utc(2026, 3, 27, 18)
    assert next_window_opening(friday_evening, WEEKDAYS_9_TO_5, BERLIN) == utc(2026, 3, 30, 7)


def test_the_same_local_nine_oclock_across_the_autumn_dst_change():
    # New York falls back on Sunday 2026-11-01: Monday 09:00 EST is 14:00 UTC
    new_york = ZoneInfo("America/New_York")
    assert next_window_opening(utc(2026, 10, 30, 22), WEEKDAYS_9_TO_5, new_york) == utc(
        2026, 11, 2, 14
    )


def test_a_start_time_the_clocks_skip_moves_past_the_gap():
    night = SendingWindow(days=["sun"], start=time(2, 30), end=time(4), timezone="UTC")
    # 02:30 does not exist in Berlin on 2026-03-29; it resolves to 03:30 CEST = 01:30 UTC
    assert next_window_opening(utc(2026, 3, 28, 12), night, BERLIN) == utc(2026, 3, 29, 1, 30)


def test_a_cap_holds_until_the_oldest_message_ages_out():
    now = utc(2026, 11, 25, 12)
    cap = Cap(max=2, days=7)
    sent = [now - timedelta(days=6), now - timedelta(days=1)]
    assert cap_frees_at(sent, cap, now) == now + timedelta(days=1)
    assert cap_frees_at(sent[1:], cap, now) is None
    assert cap_frees_at([now - timedelta(days=8), now - timedelta(days=9)], cap, now) is None
    assert cap_frees_at(sent, None, now) is None
