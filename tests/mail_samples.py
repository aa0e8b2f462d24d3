"""Mail as it arrives in a monitored mailbox, composed after the RFCs' own examples:
delivery status notifications (RFC 3464: multipart/report; report-type=delivery-status,
with the original message's headers as text/rfc822-headers), a complaint (RFC 5965 ARF:
multipart/report; report-type=feedback-report), auto-replies (RFC 3834), replies, and the
bad ones: a report without its delivery-status part, a header in raw Latin-1, a huge mail.
Each is bytes with CRLF line ends, as IMAP APPEND takes it."""

from __future__ import annotations

import base64

SENDER = "Demo Co <marketing@demo.example>"
DATE = "Tue, 03 Nov 2026 10:15:00 +0000"


def _crlf(text: str) -> bytes:
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")


def original_headers(message_id: str, to: str) -> str:
    """The headers of the message we sent, as a report returns them."""
    return (
        f"From: {SENDER}\n"
        f"To: {to}\n"
        "Subject: Stitching your tools together\n"
        f"Date: {DATE}\n"
        f"Message-ID: {message_id}\n"
        f"X-ABM-Message-Id: {message_id}\n"
        "MIME-Version: 1.0\n"
        "Content-Type: text/plain; charset=utf-8\n"
    )


def dsn(
    own_id: str,
    message_id: str,
    recipient: str,
    action: str = "failed",
    status: str = "5.1.1",
    diagnostic: str = "smtp; 550 5.1.1 <{r}>: Recipient address rejected: User unknown",
) -> bytes:
    """An RFC 3464 delivery status notification from the receiving side's MTA."""
    boundary = "RAA14128.773615765/mx.acme.example"
    subject = (
        "Undelivered Mail Returned to Sender"
        if action == "failed"
        else "Delayed Mail (still being retried)"
    )
    human = (
        "I'm sorry to have to inform you that your message could not\n"
        "be delivered to one or more recipients.\n"
        if action == "failed"
        else "Your message has not been delivered yet; the server will keep trying.\n"
    )
    return _crlf(
        "From: Mail Delivery System <MAILER-DAEMON@mx.acme.example>\n"
        "To: marketing@demo.example\n"
        f"Subject: {subject}\n"
        f"Date: {DATE}\n"
        f"Message-ID: {own_id}\n"
        "Auto-Submitted: auto-replied\n"
        "MIME-Version: 1.0\n"
        f'Content-Type: multipart/report; report-type=delivery-status;\n\tboundary="{boundary}"\n'
        "\n"
        "This is a MIME-encapsulated message.\n"
        "\n"
        f"--{boundary}\n"
        "Content-Description: Notification\n"
        "Content-Type: text/plain; charset=us-ascii\n"
        "\n"
        f"{human}"
        "\n"
        f"--{boundary}\n"
        "Content-Description: Delivery report\n"
        "Content-Type: message/delivery-status\n"
        "\n"
        "Reporting-MTA: dns; mx.acme.example\n"
        "X-Postfix-Queue-ID: 4Qx9Zk1a2Bz3C\n"
        "Arrival-Date: Tue,  3 Nov 2026 10:15:02 +0000 (UTC)\n"
        "\n"
        f"Final-Recipient: rfc822; {recipient}\n"
        f"Original-Recipient: rfc822;{recipient}\n"
        f"Action: {action}\n"
        f"Status: {status}\n"
        "Remote-MTA: dns; mx.acme.example\n"
        f"Diagnostic-Code: {diagnostic.format(r=recipient)}\n"
        + ("Will-Retry-Until: Tue, 8 Nov 2026 10:15:02 +0000\n" if action == "delayed" else "")
        + "\n"
        f"--{boundary}\n"
        "Content-Description: Undelivered Message Headers\n"
        "Content-Type: text/rfc822-headers\n"
        "\n"
        f"{original_headers(message_id, recipient)}"
        "\n"
        f"--{boundary}--\n"
    )


def dsn_two_recipients(own_id: str, message_id: str, hard: str, soft: str) -> bytes:
    """One report about two recipients: one failed for good, one delayed."""
    boundary = "two-recipients"
    return _crlf(
        "From: MAILER-DAEMON@relay.demo.example\n"
        "To: marketing@demo.example\n"
        "Subject: Delivery Status Notification\n"
        f"Date: {DATE}\n"
        f"Message-ID: {own_id}\n"
        "MIME-Version: 1.0\n"
        f'Content-Type: multipart/report; report-type="delivery-status"; boundary="{boundary}"\n'
        "\n"
        f"--{boundary}\n"
        "Content-Type: text/plain\n"
        "\n"
        "Delivery to some recipients failed or is delayed.\n"
        f"--{boundary}\n"
        "Content-Type: message/delivery-status\n"
        "\n"
        "Reporting-MTA: dns; relay.demo.example\n"
        "\n"
        f"Final-Recipient: RFC822; {hard}\n"
        "Action: failed\n"
        "Status: 5.2.1 (mailbox disabled)\n"
        "\n"
        f"Final-Recipient: RFC822; {soft}\n"
        "Action: delayed\n"
        "Status: 4.2.2\n"
        "Diagnostic-Code: smtp; 452 4.2.2 Mailbox full\n"
        "\n"
        f"--{boundary}\n"
        "Content-Type: message/rfc822\n"
        "\n"
        f"{original_headers(message_id, hard)}"
        "\n"
        "Hello\n"
        f"--{boundary}--\n"
    )


def arf(own_id: str, message_id: str, recipient: str, feedback_type: str = "abuse") -> bytes:
    """An RFC 5965 abuse report (a feedback loop's "this is spam"), the original attached."""
    boundary = "part1_13d.2e68ed54_boundary"
    return _crlf(
        "From: <abusedesk@mailbox.example>\n"
        f"Date: {DATE}\n"
        "Subject: FW: Stitching your tools together\n"
        "To: <abuse@demo.example>\n"
        f"Message-ID: {own_id}\n"
        "MIME-Version: 1.0\n"
        f'Content-Type: multipart/report; report-type=feedback-report;\n\tboundary="{boundary}"\n'
        "\n"
        f"--{boundary}\n"
        'Content-Type: text/plain; charset="US-ASCII"\n'
        "Content-Transfer-Encoding: 7bit\n"
        "\n"
        "This is an email abuse report for an email message received from IP\n"
        "192.0.2.1 on Tue, 3 Nov 2026 10:15:00 +0000.  For more information\n"
        "about this format please see http://www.mipassoc.org/arf/.\n"
        "\n"
        f"--{boundary}\n"
        "Content-Type: message/feedback-report\n"
        "\n"
        f"Feedback-Type: {feedback_type}\n"
        "User-Agent: SomeGenerator/1.0\n"
        "Version: 1\n"
        "Original-Mail-From: <bounces@demo.example>\n"
        f"Original-Rcpt-To: <{recipient}>\n"
        "Arrival-Date: Tue, 3 Nov 2026 10:15:01 +0000\n"
        "Reported-Domain: demo.example\n"
        "Source-IP: 192.0.2.1\n"
        "\n"
        f"--{boundary}\n"
        "Content-Type: message/rfc822\n"
        "Content-Disposition: inline\n"
        "\n"
        "Received: from mailserver.demo.example (mailserver.demo.example [192.0.2.1])\n"
        "        by mx.mailbox.example; Tue, 3 Nov 2026 10:15:01 +0000\n"
        f"{original_headers(message_id, 'redacted@mailbox.example')}"
        "\n"
        "Hello, we stitch tools together.\n"
        "\n"
        f"--{boundary}--\n"
    )


def auto_reply(own_id: str, in_reply_to: str, sender: str, style: str = "rfc3834") -> bytes:
    """An out-of-office answer: `rfc3834` (Auto-Submitted), `x-autoreply`, `precedence`
    or `subject` (Outlook's "Automatic reply:" and nothing else)."""
    headers = {
        "rfc3834": "Auto-Submitted: auto-replied\n"
        "Subject: Out of Office: Stitching your tools together\n",
        "x-autoreply": "X-Autoreply: yes\nSubject: Re: Stitching your tools together\n",
        "precedence": "Precedence: auto_reply\nSubject: Re: Stitching your tools together\n",
        "subject": "Subject: Automatic reply: Stitching your tools together\n",
    }[style]
    return _crlf(
        f"From: {sender}\n"
        "To: marketing@demo.example\n"
        f"{headers}"
        f"Date: {DATE}\n"
        f"Message-ID: {own_id}\n"
        f"In-Reply-To: {in_reply_to}\n"
        f"References: {in_reply_to}\n"
        "Content-Type: text/plain; charset=utf-8\n"
        "\n"
        "I am out of the office until Monday with limited access to email.\n"
    )


def reply(
    own_id: str, in_reply_to: str, sender: str, subject: str = "Re: Stitching your tools together"
) -> bytes:
    return _crlf(
        f"From: {sender}\n"
        "To: Demo Co <marketing@demo.example>\n"
        f"Subject: {subject}\n"
        f"Date: {DATE}\n"
        f"Message-ID: {own_id}\n"
        f"In-Reply-To: {in_reply_to}\n"
        f"References: <thread-start@demo.example> {in_reply_to}\n"
        "Auto-Submitted: no\n"
        "Content-Type: text/plain; charset=utf-8\n"
        "\n"
        "Sounds interesting: can we talk on Thursday?\n"
    )


def latin1_reply(own_id: str, in_reply_to: str, sender: str) -> bytes:
    """A reply whose Subject and From name are raw Latin-1 bytes, not RFC 2047 encoded."""
    return (
        f"From: Ren\xe9 Dupr\xe9 <{sender}>\r\n".encode("latin-1")
        + "Subject: R\xe9ponse \xe0 votre message\r\n".encode("latin-1")
        + _crlf(
            "To: marketing@demo.example\n"
            f"Date: {DATE}\n"
            f"Message-ID: {own_id}\n"
            f"In-Reply-To: {in_reply_to}\n"
            "Content-Type: text/plain; charset=iso-8859-1\n"
            "\n"
        )
        + "Tr\xe8s int\xe9ressant, appelez-moi.\r\n".encode("latin-1")
    )


def malformed_dsn(own_id: str, message_id: str, recipient: str) -> bytes:
    """Says it is a delivery report, holds no message/delivery-status part."""
    boundary = "broken"
    return _crlf(
        "From: MAILER-DAEMON@mx.acme.example\n"
        "To: marketing@demo.example\n"
        "Subject: Undelivered Mail Returned to Sender\n"
        f"Date: {DATE}\n"
        f"Message-ID: {own_id}\n"
        "MIME-Version: 1.0\n"
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"\n'
        "\n"
        f"--{boundary}\n"
        "Content-Type: text/plain\n"
        "\n"
        f"Could not deliver to {recipient}.\n"
        f"--{boundary}\n"
        "Content-Type: text/rfc822-headers\n"
        "\n"
        f"{original_headers(message_id, recipient)}"
        f"--{boundary}--\n"
    )


def huge_reply(own_id: str, in_reply_to: str, sender: str, size: int) -> bytes:
    """A reply with an attachment that makes it about `size` bytes."""
    boundary = "huge-boundary"
    payload = base64.encodebytes(b"\x89PNG" + b"\0" * (size * 3 // 4)).decode("ascii")
    return _crlf(
        f"From: {sender}\n"
        "To: marketing@demo.example\n"
        "Subject: Re: Stitching your tools together (our architecture diagram)\n"
        f"Date: {DATE}\n"
        f"Message-ID: {own_id}\n"
        f"In-Reply-To: {in_reply_to}\n"
        "MIME-Version: 1.0\n"
        f'Content-Type: multipart/mixed; boundary="{boundary}"\n'
        "\n"
        f"--{boundary}\n"
        "Content-Type: text/plain\n"
        "\n"
        "See the attached diagram.\n"
        f"--{boundary}\n"
        "Content-Type: image/png\n"
        "Content-Transfer-Encoding: base64\n"
        'Content-Disposition: attachment; filename="diagram.png"\n'
        "\n"
        f"{payload}"
        f"--{boundary}--\n"
    )


def newsletter(own_id: str) -> bytes:
    """Mail that is none of the above: not ours to count."""
    return _crlf(
        "From: News <news@vendor.example>\n"
        "To: marketing@demo.example\n"
        "Subject: This week in marketing\n"
        f"Date: {DATE}\n"
        f"Message-ID: {own_id}\n"
        "Precedence: list\n"
        "List-Id: <weekly.vendor.example>\n"
        "\n"
        "Ten things.\n"
    )
