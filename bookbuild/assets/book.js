// Copy buttons on code cells (the embedded renderer's counterpart of Quarto's code-copy).
document.querySelectorAll("div.sourceCode").forEach((block) => {
  const button = document.createElement("button");
  button.className = "copy-code";
  button.type = "button";
  button.textContent = "Copy";
  button.addEventListener("click", async () => {
    await navigator.clipboard.writeText(block.querySelector("code").innerText);
    button.textContent = "Copied";
    setTimeout(() => (button.textContent = "Copy"), 1500);
  });
  block.appendChild(button);
});

// Search: sections whose title or prose contain every word typed (index built with the site).
const box = document.querySelector("input.search");
const results = document.querySelector("ol.search-results");
function loadIndex() {
  return new Promise((resolve) => {
    if (window.bookSearchIndex) return resolve(window.bookSearchIndex);
    const script = document.createElement("script");
    script.src = "search-index.js";
    script.onload = () => resolve(window.bookSearchIndex || []);
    script.onerror = () => resolve([]);
    document.head.appendChild(script);
  });
}
box?.addEventListener("input", async () => {
  const index = await loadIndex();
  const words = box.value.toLowerCase().split(/\s+/).filter(Boolean);
  results.replaceChildren();
  if (!words.length) return;
  const hits = index.filter((e) => words.every((w) => (e.title + " " + e.text).toLowerCase().includes(w)));
  for (const hit of hits.slice(0, 8)) {
    const item = document.createElement("li");
    const link = document.createElement("a");
    link.href = hit.page + (hit.id ? "#" + hit.id : "");
    link.textContent = hit.title;
    item.appendChild(link);
    results.appendChild(item);
  }
  if (!hits.length) results.innerHTML = "<li class='none'>No match</li>";
});
