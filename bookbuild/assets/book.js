// The website's behaviour (embedded renderer): theme, menu, copy buttons, heading anchors, the section being read,
// and search. Every page works without it, less these comforts.
(function () {
  const root = document.documentElement;

  // --- Light or dark. <head> has already applied the reader's stored choice, else the system's, before the page
  // was drawn (no flash). A click stores a choice for every page; without one the page follows the system setting.
  const THEME_KEY = "book-theme";
  const stored = () => {
    try { return localStorage.getItem(THEME_KEY); } catch (e) { return null; }
  };
  const toggles = document.querySelectorAll(".theme-toggle");
  function setTheme(theme, remember) {
    root.dataset.theme = theme;
    if (remember) {
      try { localStorage.setItem(THEME_KEY, theme); } catch (e) { /* private mode: this page only */ }
    }
    const label = theme === "dark" ? "Switch to the light theme" : "Switch to the dark theme";
    toggles.forEach((button) => { button.setAttribute("aria-label", label); button.title = label; });
  }
  setTheme(root.dataset.theme === "dark" ? "dark" : "light", false);
  toggles.forEach((button) => button.addEventListener("click", () => {
    setTheme(root.dataset.theme === "dark" ? "light" : "dark", true);
  }));
  const system = window.matchMedia ? matchMedia("(prefers-color-scheme: dark)") : null;
  system?.addEventListener?.("change", (e) => { if (!stored()) setTheme(e.matches ? "dark" : "light", false); });
  window.addEventListener("storage", (e) => {  // chosen in another tab
    if (e.key === THEME_KEY && (e.newValue === "dark" || e.newValue === "light")) setTheme(e.newValue, false);
  });

  // --- The chapter list behind the menu button (narrow screens).
  const menu = document.querySelector(".menu-toggle");
  function setMenu(open) {
    document.body.classList.toggle("menu-open", open);
    menu?.setAttribute("aria-expanded", String(open));
  }
  menu?.addEventListener("click", () => setMenu(!document.body.classList.contains("menu-open")));
  document.querySelector(".backdrop")?.addEventListener("click", () => setMenu(false));
  document.addEventListener("keydown", (e) => { if (e.key === "Escape") setMenu(false); });
  document.querySelector(".sidebar")?.addEventListener("click", (e) => { if (e.target.closest("a")) setMenu(false); });

  // --- Copy buttons on code blocks. The text is the code's own (textContent): no continuation marks.
  async function copy(text) {
    if (navigator.clipboard && window.isSecureContext) {
      try { await navigator.clipboard.writeText(text); return true; } catch (e) { /* fall through */ }
    }
    const area = document.createElement("textarea");  // pages opened from disk (file://)
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.cssText = "position:fixed;top:0;left:0;opacity:0";
    document.body.appendChild(area);
    area.select();
    let done = false;
    try { done = document.execCommand("copy"); } catch (e) { done = false; }
    area.remove();
    return done;
  }
  document.querySelectorAll("div.sourceCode").forEach((block) => {
    const button = document.createElement("button");
    button.className = "copy-code";
    button.type = "button";
    button.textContent = "Copy";
    button.setAttribute("aria-label", "Copy the code");
    button.addEventListener("click", async () => {
      const done = await copy(block.querySelector("code").textContent);
      button.textContent = done ? "Copied" : "Select and copy";
      setTimeout(() => (button.textContent = "Copy"), 1500);
    });
    block.appendChild(button);
  });

  // --- Anchor links on headings.
  document.querySelectorAll("main h2[id], main h3[id], main h4[id]").forEach((heading) => {
    const link = document.createElement("a");
    link.className = "anchor";
    link.href = "#" + heading.id;
    link.textContent = "#";
    link.setAttribute("aria-label", "Link to this section");
    heading.appendChild(link);
  });

  // --- "On this page": the entry of the section being read, that is, of the last heading above the top third.
  const toc = document.querySelector("nav.toc");
  const entries = [];
  toc?.querySelectorAll("a[href^='#']").forEach((link) => {
    const heading = document.getElementById(decodeURIComponent(link.getAttribute("href").slice(1)));
    if (heading) entries.push({ heading, link });
  });
  let current = null;
  function markCurrent() {
    const line = window.innerHeight / 3;
    let found = null;
    for (const entry of entries) {
      if (entry.heading.getBoundingClientRect().top <= line) found = entry;
      else break;
    }
    if (found === current) return;
    current?.link.classList.remove("active");
    current = found;
    if (!found) return;
    found.link.classList.add("active");
    const box = toc.getBoundingClientRect(), at = found.link.getBoundingClientRect();
    if (at.top < box.top || at.bottom > box.bottom) toc.scrollTop += at.top - box.top - box.height / 2;
  }
  if (entries.length && "IntersectionObserver" in window) {
    // A heading crossing the top third is the only moment the answer can change.
    const observer = new IntersectionObserver(markCurrent, { rootMargin: "0px 0px -66% 0px" });
    entries.forEach((entry) => observer.observe(entry.heading));
    markCurrent();
  }

  // --- Search: sections holding every word typed, best first: a match in a chapter's title, then in a section's
  // heading, then by how often the words occur in the text; each with an excerpt around the match.
  const box = document.querySelector("input.search");
  const results = document.querySelector("ol.search-results");
  let index = null;
  function loadIndex() {
    return new Promise((resolve) => {
      if (window.bookSearchIndex) return resolve(window.bookSearchIndex);
      const script = document.createElement("script");  // a script, not JSON: also works from disk (file://)
      script.src = "search-index.js";
      script.onload = () => resolve(window.bookSearchIndex || []);
      script.onerror = () => resolve([]);
      document.head.appendChild(script);
    });
  }
  function occurrences(text, word) {
    let count = 0;
    for (let at = text.indexOf(word); at !== -1 && count < 50; at = text.indexOf(word, at + word.length)) count++;
    return count;
  }
  function score(entry, words) {
    const chapter = entry.chapter.toLowerCase(), heading = entry.heading.toLowerCase(), text = entry.text.toLowerCase();
    let total = 0;
    for (const word of words) {
      const inTitle = chapter.includes(word), inHeading = heading.includes(word), inText = occurrences(text, word);
      if (!inTitle && !inHeading && !inText) return 0;
      if (inTitle) total += entry.id ? 2 : 1000;  // the chapter itself ranks first; its sections only a little up
      if (inHeading) total += 100;
      total += Math.min(inText, 20);
    }
    return total;
  }
  function excerpt(text, words) {
    const lower = text.toLowerCase();
    const hits = words.map((w) => lower.indexOf(w)).filter((i) => i >= 0);
    if (!hits.length) return text.length > 140 ? text.slice(0, 140).replace(/\s+\S*$/, "") + " …" : text;
    const at = Math.min(...hits);
    let start = Math.max(0, at - 50), end = Math.min(text.length, at + 110);
    if (start > 0) start = text.indexOf(" ", start) + 1 || start;
    if (end < text.length) end = text.lastIndexOf(" ", end) > at ? text.lastIndexOf(" ", end) : end;
    return (start > 0 ? "… " : "") + text.slice(start, end) + (end < text.length ? " …" : "");
  }
  function highlighted(text, words) {
    const span = document.createElement("span");
    const pattern = new RegExp(words.map((w) => w.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")).join("|"), "gi");
    let last = 0;
    for (const m of text.matchAll(pattern)) {
      if (!m[0]) continue;
      span.append(text.slice(last, m.index));
      const mark = document.createElement("mark");
      mark.textContent = m[0];
      span.append(mark);
      last = m.index + m[0].length;
    }
    span.append(text.slice(last));
    return span;
  }
  async function search() {
    index = index || await loadIndex();
    const words = box.value.toLowerCase().split(/\s+/).filter(Boolean);
    results.replaceChildren();
    if (!words.length) return;
    const hits = index.map((entry, order) => ({ entry, order, score: score(entry, words) }))
      .filter((hit) => hit.score > 0)
      .sort((a, b) => b.score - a.score || a.order - b.order);
    for (const { entry } of hits.slice(0, 10)) {
      const item = document.createElement("li");
      const link = document.createElement("a");
      link.href = entry.page + (entry.id ? "#" + entry.id : "");
      const where = highlighted(entry.heading ? `${entry.chapter} › ${entry.heading}` : entry.chapter, words);
      where.className = "where";
      const context = highlighted(excerpt(entry.text, words), words);
      context.className = "excerpt";
      link.append(where, context);
      item.appendChild(link);
      results.appendChild(item);
    }
    if (!hits.length) {
      const none = document.createElement("li");
      none.className = "none";
      none.textContent = "No match";
      results.appendChild(none);
    }
  }
  box?.addEventListener("input", search);
  box?.addEventListener("keydown", (e) => {
    const first = results.querySelector("a");
    if (e.key === "Enter" && first) first.click();
  });
})();
