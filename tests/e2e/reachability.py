"""Check in a real browser that every control of a page can be reached: seen, scrolled to and clicked.

A control is unreachable when it lies outside what the document can scroll to, when an ancestor with
``overflow: hidden`` (or ``clip``) cuts it off, when the page itself is wider than the window (a sideways
page scroll nobody expects), or when, scrolled into view, something else covers its centre.
"""

from __future__ import annotations

from typing import Any

# Controls: buttons, inputs (a switch's visible part stands for its hidden checkbox), links, sortable
# table columns with the first row's cells, disclosure summaries, the alert feed's prices.
CONTROLS = ", ".join(
    [
        "button",
        "input:not([type=checkbox])",
        "select",
        "a[href]",
        "summary",
        ".switch",
        "th[data-sort]",
        "#screener-body tr:first-child td",
        "#alert-feed .alert-item .price",
    ]
)

_SCRIPT = """
([rootSelector, selector]) => {
  const root = document.querySelector(rootSelector);
  const doc = document.documentElement;
  const problems = [];
  const name = (el) => {
    const id = el.id ? '#' + el.id : '';
    const data = Object.entries(el.dataset).map(([k, v]) => `[${k}=${v}]`).join('');
    const text = (el.textContent || '').trim().slice(0, 24);
    return `${el.tagName.toLowerCase()}${id}.${[...el.classList].join('.')}${data} "${text}"`;
  };
  if (doc.scrollWidth > doc.clientWidth) {
    problems.push(`the page is ${doc.scrollWidth}px wide in a ${doc.clientWidth}px window`);
  }
  // Overflow set on <body> applies to the viewport when <html> leaves it visible (CSS Overflow 3).
  const rootStyle = getComputedStyle(doc);
  const bodyStyle = getComputedStyle(document.body);
  const viewport = rootStyle.overflowX === 'visible' && rootStyle.overflowY === 'visible' ? bodyStyle : rootStyle;
  const clipsX = ['hidden', 'clip'].includes(viewport.overflowX);
  const clipsY = ['hidden', 'clip'].includes(viewport.overflowY);
  const shown = [...root.querySelectorAll(selector)].filter((el) => {
    const style = getComputedStyle(el);
    return el.getClientRects().length > 0 && style.visibility !== 'hidden';
  });
  for (const el of shown) {
    const r = el.getBoundingClientRect();
    if (r.width < 1 || r.height < 1) { problems.push(`${name(el)} has no size`); continue; }
    // Inside a scrolling panel the panel must lie within the document; the panel brings the control to view.
    let outer = el;
    for (let a = el.parentElement; a && a !== document.body && a !== doc; a = a.parentElement) {
      const style = getComputedStyle(a);
      if (['auto', 'scroll'].includes(style.overflowX) || ['auto', 'scroll'].includes(style.overflowY)) outer = a;
    }
    const o = outer.getBoundingClientRect();
    const left = o.left + scrollX, top = o.top + scrollY, right = o.right + scrollX, bottom = o.bottom + scrollY;
    if (left < -1 || top < -1 || right > doc.scrollWidth + 1 || bottom > doc.scrollHeight + 1) {
      problems.push(`${name(el)} lies outside the document (${left},${top})-(${right},${bottom})`);
    }
    if ((clipsX && right > doc.clientWidth + 1) || (clipsY && bottom > doc.clientHeight + 1)) {
      problems.push(`${name(el)} is beyond the window and the page cannot scroll to it`);
    }
    for (let a = el.parentElement; a && a !== document.body && a !== doc; a = a.parentElement) {
      const style = getComputedStyle(a);
      const box = a.getBoundingClientRect();
      const axes = [['X', 'left', 'right', 'scrollLeft'], ['Y', 'top', 'bottom', 'scrollTop']];
      for (const [axis, lo, hi, scroll] of axes) {
        const overflow = style['overflow' + axis];
        if (overflow === 'hidden' || overflow === 'clip') {
          if (r[lo] < box[lo] - 1 || r[hi] > box[hi] + 1) {
            problems.push(`${name(el)} is cut off by ${name(a)} (overflow-${axis.toLowerCase()}: ${overflow})`);
          }
        } else if ((overflow === 'auto' || overflow === 'scroll') && r[lo] - box[lo] + a[scroll] < -1) {
          problems.push(`${name(el)} sits before the start of the scrolling ${name(a)}`);
        }
      }
    }
  }
  // Scrolled into view, the control itself (or its content) must be what a click at its centre hits.
  for (const el of shown) {
    el.scrollIntoView({ block: 'center', inline: 'center' });
    const r = el.getBoundingClientRect();
    const x = Math.min(Math.max(r.left + r.width / 2, 0), doc.clientWidth - 1);
    const y = Math.min(Math.max(r.top + r.height / 2, 0), doc.clientHeight - 1);
    const hit = document.elementFromPoint(x, y);
    if (!hit || !(el === hit || el.contains(hit))) {
      problems.push(`${name(el)} is covered by ${hit ? name(hit) : 'nothing'} when scrolled into view`);
    }
  }
  for (const el of [doc, ...document.querySelectorAll('*')]) {
    if (el.scrollTop || el.scrollLeft) { el.scrollTop = 0; el.scrollLeft = 0; }
  }
  return { checked: shown.length, problems };
}
"""


async def unreachable_controls(page: Any, root: str = "body") -> tuple[int, list[str]]:
    """Return (how many controls were checked, what is wrong) for the controls inside ``root``."""
    result = await page.evaluate(_SCRIPT, [root, CONTROLS])
    return int(result["checked"]), list(result["problems"])
