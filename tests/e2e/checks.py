"""What every page of Kestrel must pass, checked in the browser on the rendered page.

`page_problems` reads the DOM as assistive technology meets it: the language, the
landmark, the heading outline, alternative text and an accessible name for every
control. `assert_axe_clean` adds axe-core's WCAG 2 A/AA rules, colour contrast among
them. The keyboard and phone checks drive the page the way such a visitor does.
"""

from __future__ import annotations

from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import BrowserContext, ConsoleMessage, Locator, Page

# Runs in the page; returns one line per problem, naming the element.
PAGE_PROBLEMS_JS = r"""
() => {
  const problems = [];
  const describe = (el) => {
    let text = el.tagName.toLowerCase();
    if (el.id) text += "#" + el.id;
    if (el.getAttribute("name")) text += "[name=" + el.getAttribute("name") + "]";
    if (el.className && typeof el.className === "string") text += "." + el.className.trim().split(/\s+/).join(".");
    return text;
  };
  const rendered = (el) => el.getClientRects().length > 0 || el.closest("details:not([open])") !== null;
  const textOf = (el) => (el.innerText || el.textContent || "").trim();
  const byIds = (ids) => ids.split(/\s+/).map((id) => document.getElementById(id)).filter(Boolean);

  if (!(document.documentElement.getAttribute("lang") || "").trim()) problems.push("<html> has no lang");
  if (!document.title.trim()) problems.push("the page has no <title>");

  const mains = document.querySelectorAll("main, [role=main]");
  if (mains.length !== 1) problems.push(`${mains.length} <main> landmarks, not one`);

  const h1s = document.querySelectorAll("h1");
  if (h1s.length !== 1) problems.push(`${h1s.length} <h1> elements, not one`);
  let previous = 0;
  for (const heading of document.querySelectorAll("h1, h2, h3, h4, h5, h6")) {
    const level = Number(heading.tagName[1]);
    if (level > previous + 1) {
      problems.push(`heading level skips from h${previous} to h${level}: "${textOf(heading).slice(0, 60)}"`);
    }
    if (!textOf(heading)) problems.push(`empty heading ${describe(heading)}`);
    previous = level;
  }

  for (const img of document.querySelectorAll("img, input[type=image]")) {
    if (!img.hasAttribute("alt")) problems.push(`image without alt: ${describe(img)} ${img.getAttribute("src")}`);
  }
  for (const svg of document.querySelectorAll("svg[role=img]")) {
    const labelled = (svg.getAttribute("aria-label") || "").trim()
      || (svg.getAttribute("aria-labelledby") && byIds(svg.getAttribute("aria-labelledby")).some(textOf))
      || (svg.querySelector("title") && svg.querySelector("title").textContent.trim());
    if (!labelled) problems.push(`svg image without a name: ${describe(svg)}`);
  }

  // A control's accessible name: aria-labelledby, aria-label, <label for>, a wrapping
  // <label>; buttons also by their content or value.
  const nameOf = (el) => {
    const labelledby = el.getAttribute("aria-labelledby");
    if (labelledby) {
      const text = byIds(labelledby).map(textOf).join(" ").trim();
      if (text) return text;
    }
    const label = (el.getAttribute("aria-label") || "").trim();
    if (label) return label;
    const labels = Array.from(el.labels || []).map(textOf).join(" ").trim();
    if (labels) return labels;
    const isButton = el.tagName === "BUTTON" || ["submit", "button", "reset"].includes(el.type);
    if (isButton) return el.tagName === "BUTTON" ? textOf(el) : (el.value || "").trim();
    return "";
  };
  const controls = "input:not([type=hidden]), select, textarea, button, progress, meter, output";
  for (const control of document.querySelectorAll(controls)) {
    if (!rendered(control)) continue;
    if (!nameOf(control)) problems.push(`control without an accessible name: ${describe(control)}`);
  }
  for (const link of document.querySelectorAll("a[href]")) {
    if (!rendered(link)) continue;
    if (!(textOf(link) || (link.getAttribute("aria-label") || "").trim())) {
      problems.push(`link without a name: ${describe(link)} -> ${link.getAttribute("href")}`);
    }
  }
  // Labels point at ids: a duplicate id hands one control's label to another.
  const seen = new Set();
  for (const el of document.querySelectorAll("[id]")) {
    if (seen.has(el.id)) problems.push(`duplicate id "${el.id}"`);
    seen.add(el.id);
  }
  // A description or label pointing at nothing is lost on the way to the screen reader.
  for (const el of document.querySelectorAll("[aria-describedby], [aria-labelledby], [aria-controls]")) {
    for (const attribute of ["aria-describedby", "aria-labelledby", "aria-controls"]) {
      for (const id of (el.getAttribute(attribute) || "").split(/\s+/).filter(Boolean)) {
        if (!document.getElementById(id)) problems.push(`${attribute} of ${describe(el)} names a missing id "${id}"`);
      }
    }
  }
  // aria-label on an element without a role is ignored by most screen readers.
  for (const el of document.querySelectorAll("span[aria-label]:not([role]), div[aria-label]:not([role])")) {
    problems.push(`aria-label on a generic element (not announced): ${describe(el)}`);
  }
  return problems;
}
"""

# The focused element, and whether a sighted keyboard user can see where focus is.
FOCUS_JS = r"""
() => {
  const el = document.activeElement;
  if (!el || el === document.body) return null;
  const style = getComputedStyle(el);
  const outline = style.outlineStyle !== "none" && parseFloat(style.outlineWidth) > 0;
  const shadow = style.boxShadow && style.boxShadow !== "none";
  const box = el.getBoundingClientRect();
  return {
    tag: el.tagName.toLowerCase(),
    id: el.id,
    text: (el.innerText || el.value || el.getAttribute("aria-label") || "").trim().slice(0, 40),
    indicator: Boolean(outline || shadow),
    style: `${style.outlineStyle} ${style.outlineWidth} / ${style.boxShadow}`,
    // On screen, not merely rendered: the page scrolls a focused element into view.
    visible: box.width > 0 && box.height > 0 && box.bottom > 0 && box.top < innerHeight
      && box.right > 0 && box.left < innerWidth,
  };
}
"""

# Elements sticking out past the right edge of the viewport (what makes a phone scroll sideways).
OVERFLOW_JS = r"""
() => {
  const root = document.documentElement;
  const wide = [];
  if (root.scrollWidth > root.clientWidth) {
    for (const el of document.body.querySelectorAll("*")) {
      const box = el.getBoundingClientRect();
      if (box.right > root.clientWidth + 1 && box.width > 0) {
        wide.push(`${el.tagName.toLowerCase()}.${String(el.className).trim()} right=${Math.round(box.right)}`);
      }
    }
  }
  return {scrollWidth: root.scrollWidth, clientWidth: root.clientWidth, wide: wide.slice(0, 8)};
}
"""


def page_problems(page: Page) -> list[str]:
    return page.evaluate(PAGE_PROBLEMS_JS)


def assert_accessible(page: Page) -> None:
    """Kestrel's own checks, then axe-core's WCAG A/AA rules (colour contrast among them)."""
    problems = page_problems(page)
    assert not problems, f"{page.url}:\n  " + "\n  ".join(problems)
    assert_axe_clean(page)


# axe-core's rules for WCAG 2.0, 2.1 and 2.2 at levels A and AA: colour contrast, names,
# roles, landmarks, lists, tables, ARIA, target size. (Its "best-practice" rules are not
# WCAG requirements.)
WCAG_AA_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]


def assert_axe_clean(page: Page, *, skip: dict[str, str] | None = None) -> None:
    """Run axe-core on the page as it is now, and fail listing each WCAG A/AA violation.

    axe's source goes in through the DevTools protocol (page.evaluate), which the page's
    Content-Security-Policy does not govern, so the CSP watcher sees nothing of it.
    `skip` maps a rule id to why a third-party page fails it; Kestrel's pages skip nothing.
    """
    options = {
        "runOnly": {"type": "tag", "values": WCAG_AA_TAGS},
        "rules": {rule: {"enabled": False} for rule in skip or {}},
        "resultTypes": ["violations"],
        # axe's preload re-parses each @import-ed style sheet through an inline <style>,
        # which the policy refuses (the admin's forms.css imports widgets.css), so the
        # watcher would report the test's own doing. Without it, css-orientation-lock and
        # no-autoplay-audio go unchecked: Kestrel has no orientation media query, no audio.
        "preload": False,
    }
    violations = Axe().run(page, options=options).response["violations"]
    lines = []
    for violation in violations:
        lines.append(f"{violation['id']} ({violation['impact']}): {violation['help']}")
        for node in violation["nodes"]:
            summary = " ".join(node["failureSummary"].split())
            lines.append(f"    {', '.join(map(str, node['target']))}: {summary}")
    assert not violations, f"{page.url}: axe found {len(violations)} WCAG violation(s):\n  " + "\n  ".join(lines)


def focused(page: Page) -> dict | None:
    return page.evaluate(FOCUS_JS)


def tab_from_top(page: Page, *targets: Locator, max_presses: int = 40) -> list[dict]:
    """Press Tab from the top of the page until each target has had focus, in order.

    Every stop on the way must show a focus indicator. The list of stops, for messages.
    """
    # Start where a keyboard user starts: at the top of the document. A blur() alone
    # would leave Chromium's starting point on an autofocused field, so the body takes
    # focus for a moment and the next Tab starts from the document's beginning.
    page.evaluate(
        """() => {
            document.activeElement && document.activeElement.blur();
            document.body.tabIndex = -1;
            document.body.focus();
            document.body.removeAttribute("tabindex");
            window.scrollTo(0, 0);
        }"""
    )
    stops: list[dict] = []
    remaining = list(targets)
    for _ in range(max_presses):
        if not remaining:
            break
        page.keyboard.press("Tab")
        stop = focused(page)
        assert stop is not None, f"Tab left the page after {stops}"
        stops.append(stop)
        assert stop["visible"], f"focus went to an element off screen: {stop}"
        assert stop["indicator"], f"no visible focus indicator on {stop}"
        if remaining[0].evaluate("el => el === document.activeElement"):
            remaining.pop(0)
    assert not remaining, f"{page.url}: Tab never reached {remaining[0]} in {max_presses} presses: {stops}"
    return stops


def assert_no_horizontal_scroll(page: Page) -> None:
    overflow = page.evaluate(OVERFLOW_JS)
    assert overflow["scrollWidth"] <= overflow["clientWidth"], f"{page.url} scrolls sideways: {overflow}"


# WCAG 2.2's spacing exception for a small target: a 24 px circle centred on it touches
# no other target, nor the circle of another small one. Runs on the target element.
SPACED_JS = r"""
(target) => {
  const centre = (box) => [box.left + box.width / 2, box.top + box.height / 2];
  const small = (box) => box.width < 24 || box.height < 24;
  const [x, y] = centre(target.getBoundingClientRect());
  const crowding = [];
  for (const other of document.querySelectorAll("a[href], button, input, select, textarea, summary, [tabindex]")) {
    if (other === target || other.contains(target) || target.contains(other)) continue;
    const box = other.getBoundingClientRect();
    if (!box.width || !box.height) continue;
    const dx = Math.max(box.left - x, 0, x - box.right), dy = Math.max(box.top - y, 0, y - box.bottom);
    const [ox, oy] = centre(box);
    if (Math.hypot(dx, dy) < 12 || (small(box) && Math.hypot(ox - x, oy - y) < 24)) {
      crowding.push(other.tagName.toLowerCase() + " " + (other.innerText || "").trim().slice(0, 30));
    }
  }
  return crowding;
}
"""


def assert_tappable(page: Page, target: Locator, *, min_size: float = 24) -> None:
    """Inside the viewport's width, and a finger can hit it: WCAG 2.2's minimum target size
    (24 x 24 CSS px), or smaller with that much room around it."""
    target.scroll_into_view_if_needed()
    box = target.bounding_box()
    assert box is not None, f"{target} is not rendered"
    width = page.viewport_size["width"]
    assert box["x"] >= 0, f"{target} starts left of the screen: {box}"
    assert box["x"] + box["width"] <= width, f"{target} ends right of the screen: {box}"
    if box["width"] < min_size or box["height"] < min_size:
        crowding = target.evaluate(SPACED_JS)
        assert not crowding, f"{target} is too small to tap ({box}) and too close to {crowding}"


# Content-Security-Policy violations, as the page itself sees them: the listener is in
# every document from its first line (an init script), and reports over a binding that
# outlives navigations. Chromium's own console line ("Refused to ...") is caught too.
CSP_LISTENER_JS = r"""
document.addEventListener("securitypolicyviolation", (event) => {
  const where = event.sourceFile ? ` at ${event.sourceFile}:${event.lineNumber}` : "";
  window.kestrelCspViolation(
    `${event.documentURI}: ${event.effectiveDirective} refused ${event.blockedURI || "inline"}${where} ${event.sample}`
  );
}, true);
"""


def watch_csp(context: BrowserContext, violations: list[str]) -> None:
    """Record in `violations` every CSP violation of every page `context` opens."""
    context.expose_binding("kestrelCspViolation", lambda source, text: violations.append(text))
    context.add_init_script(CSP_LISTENER_JS)

    def on_console(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text or message.text.startswith("Refused to"):
            violations.append(f"{message.page.url if message.page else '?'}: {message.text}")

    context.on("console", on_console)


def assert_no_csp_violation(violations: list[str]) -> None:
    assert violations == [], "Content-Security-Policy violations:\n" + "\n".join(violations)


def watch_navigations(page: Page) -> list[str]:
    """Every top-level navigation of `page` from now on (a reload counts), and a marker
    in the document that any navigation would wipe."""
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url) if frame == page.main_frame else None)
    page.evaluate("() => { window.kestrelSameDocument = true; }")
    return navigations
