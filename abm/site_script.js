/* abm-orchestrator site script: page views of people who came from a tracked email link.
   Include it on your own site, only once the visitor has consented where the law asks for
   consent (see the README, "Website visits"):
     <script src="https://links.example.com/t.js" async></script>
   What it does: takes the visitor id a tracked link added (?__NAME__=...), keeps it in a
   first-party cookie on your domain and removes it from the address bar; then, on every
   page, sends that id and the page's path (never its query string or fragment) to the
   server. Nothing at all when the browser sends Do-Not-Track or Global Privacy Control:
   the id is then dropped, and the cookie deleted. Visitors without an id send nothing.
   Single-page apps call window.abmPageView() after each route change.
   Options on the script tag: data-cookie-domain="example.com" to share the cookie with
   your subdomains. */
(function () {
  "use strict";
  var ENDPOINT = "__ENDPOINT__";
  var NAME = "__NAME__";
  var MAX_AGE = __MAX_AGE__;
  var nav = window.navigator;
  var tag = document.currentScript;
  var domain = tag && tag.getAttribute("data-cookie-domain");
  var optedOut =
    nav.doNotTrack === "1" || window.doNotTrack === "1" || nav.globalPrivacyControl === true;

  function readCookie() {
    var found = document.cookie.match(new RegExp("(?:^|; )" + NAME + "=([A-Za-z0-9_.-]+)"));
    return found ? found[1] : null;
  }

  function writeCookie(value, maxAge) {
    document.cookie =
      NAME + "=" + value + "; Max-Age=" + maxAge + "; Path=/; SameSite=Lax" +
      (domain ? "; Domain=" + domain : "") +
      (window.location.protocol === "https:" ? "; Secure" : "");
  }

  var url = new URL(window.location.href);
  var fromLink = url.searchParams.get(NAME);
  if (fromLink !== null) {
    url.searchParams.delete(NAME);
    if (window.history && window.history.replaceState) {
      window.history.replaceState(window.history.state, "", url.pathname + url.search + url.hash);
    }
  }
  if (optedOut) {
    if (readCookie()) writeCookie("", 0);
    return;
  }
  if (fromLink && /^[A-Za-z0-9_.-]{1,200}$/.test(fromLink)) writeCookie(fromLink, MAX_AGE);

  function pageView() {
    var visitor = readCookie();
    if (!visitor) return;
    var body = new URLSearchParams();
    body.set("vid", visitor);
    body.set("p", window.location.pathname.slice(0, 1024));
    if (!(nav.sendBeacon && nav.sendBeacon(ENDPOINT, body))) {
      fetch(ENDPOINT, { method: "POST", body: body, mode: "no-cors", keepalive: true, credentials: "omit" });
    }
  }

  window.abmPageView = pageView;
  pageView();
})();
