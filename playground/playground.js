// The playground page's widgets (playground.qmd): each `[data-pg]` element of the page becomes one of them. The
// models and tokenizers are computed by engine.js from the files llm.webexport writes into playground/models/.
"use strict";

(() => {
  const E = BookEngine;
  const modelsUrl = new URL("models/", document.currentScript.src);
  const parts = Object.fromEntries([...document.querySelectorAll("[data-pg]")].map((el) => [el.dataset.pg, el]));

  // --- Loading: each file once, on first use ---------------------------------------------------------------------

  async function fetchFile(name) {
    const response = await fetch(new URL(name, modelsUrl));
    if (!response.ok) throw new Error(`${name}: HTTP ${response.status}`);
    return response.arrayBuffer();
  }
  const json = async (name) => JSON.parse(new TextDecoder().decode(await fetchFile(name)));
  const once = (load) => { let promise; return () => (promise ??= load()); };
  const FORMAT = 2;  // llm.webexport.WEB_FORMAT of the files this script reads
  const manifest = once(async () => {
    const info = await json("manifest.json");
    if (info.format !== FORMAT) {
      throw new Error(`models/manifest.json is in format ${info.format}, this page reads format ${FORMAT}; ` +
                      "export the models again (llm export-web)");
    }
    return info;
  });
  const loaders = {};
  const tokenizer = (name) => (loaders[`tokenizer ${name}`] ??= once(async () =>
    new E.BPETokenizer(await json((await manifest()).tokenizers[name]))))();
  const model = (name) => (loaders[`model ${name}`] ??= once(async () =>
    E.loadModel(await fetchFile((await manifest()).models[name].file))))();
  const modelTokenizer = async (name) => tokenizer((await manifest()).models[name].tokenizer);
  const endOfText = async (name) => (await modelTokenizer(name)).specialIds.get((await manifest()).end_of_text);

  // --- Small DOM helpers -----------------------------------------------------------------------------------------

  function h(tag, attributes = {}, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(attributes)) {
      if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
      else if (value !== false && value != null) el.setAttribute(key, value === true ? "" : value);
    }
    el.append(...children.flat().filter((c) => c != null));
    return el;
  }
  const labelled = (text, control, note) => h("label", { class: "pg-field" }, h("span", {}, text), control, note);
  const number = (input) => Number(input.value);
  const yieldToBrowser = () => new Promise((resolve) => setTimeout(resolve, 0));

  // How a token looks: its text with whitespace made visible, or its bytes in hex when they are not whole UTF-8
  // characters (a character that BPE split across tokens).
  function piece(tok, id) {
    if (id >= tok.vocab.length) return { text: tok.specials[id - tok.vocab.length], kind: "special" };
    const bytes = tok.tokenBytes(id);
    try {
      const text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
      return { text: text.replace(/\n/g, "↵").replace(/\t/g, "⇥"), kind: "text" };
    } catch {
      return { text: [...bytes].map((b) => b.toString(16).padStart(2, "0")).join(" "), kind: "bytes" };
    }
  }

  function chip(tok, id, index, extra = {}) {
    const { text, kind } = piece(tok, id);
    const bytes = tok.tokenBytes(id).length;
    return h("span", { class: `pg-chip pg-${kind}`, "data-id": id, style: `--hue: ${(index * 67) % 360}`,
                       title: `id ${id} · ${bytes} byte${bytes === 1 ? "" : "s"}`, ...extra },
             h("span", { class: "pg-piece" }, text || " "));
  }

  function fail(el, error) {
    console.error(error);
    el.replaceChildren(h("p", { class: "pg-error" }, `Something went wrong: ${error.message}`));
  }

  // An error shown on one line of a widget, which keeps its controls so that the reader can choose another model.
  // A model the engine cannot run is no fault of the page: its reason is shown as it is, and nothing is logged.
  function report(line, error) {
    const unsupported = error instanceof E.UnsupportedModel;
    if (!unsupported) console.error(error);
    line.textContent = unsupported ? error.message : `Something went wrong: ${error.message}`;
    line.classList.add("pg-error");
  }

  // A menu of the pretrained models the manifest lists, in its order, each named by its architecture, its run's
  // config file and its size.
  const KINDS = { gpt: "GPT-2-style", modern: "modern" };
  function modelMenu(info) {
    return h("select", { "aria-label": "Model" }, info.pretrained.map((name) => {
      const { architecture, config, parameters } = info.models[name];
      return h("option", { value: name }, `${KINDS[architecture] || architecture} model (${config}, ` +
               `${(parameters / 1e6).toFixed(2)} M parameters)`);
    }));
  }

  // --- Tokens ----------------------------------------------------------------------------------------------------

  function tokensWidget(root) {
    const text = h("textarea", { rows: 4, spellcheck: "false", "aria-label": "Text to tokenize" },
      "It was the best of times, it was the worst of times. Mr. Darcy paid £1,250 for the naïve café ☕." +
      "<|endoftext|>A new document begins.");
    const columns = [["book", "This book's tokenizer"], ["gpt2", "GPT-2's tokenizer"]].map(([name, title]) => {
      const stats = h("p", { class: "pg-stats" });
      const spans = h("div", { class: "pg-spans" });
      const ids = h("code", { class: "pg-ids" });
      const column = h("section", { class: "pg-column", "data-tokenizer": name },
                       h("h4", {}, title), stats, spans, h("p", { class: "pg-ids-label" }, "ids"), ids);
      return { name, column, stats, spans, ids };
    });
    root.replaceChildren(text, h("div", { class: "pg-columns" }, columns.map((c) => c.column)));

    let pending = null;
    async function update() {
      const value = text.value, bytes = new TextEncoder().encode(value).length;
      for (const c of columns) {
        const tok = await tokenizer(c.name);
        const ids = tok.encode(value, true);
        c.column.dataset.ids = ids.join(",");
        c.stats.textContent = `${ids.length} token${ids.length === 1 ? "" : "s"}` +
          (ids.length ? ` · ${(bytes / ids.length).toFixed(2)} bytes per token` : "") +
          ` · vocabulary of ${tok.vocabSize.toLocaleString("en")}`;
        c.spans.replaceChildren(...ids.map((id, i) => chip(tok, id, i)));
        c.ids.textContent = ids.join(" ");
      }
      root.dataset.state = "done";
    }
    text.addEventListener("input", () => {
      root.dataset.state = "busy";
      clearTimeout(pending);
      pending = setTimeout(() => update().catch((e) => fail(root, e)), 80);
    });
    return update();
  }

  // --- Generation ------------------------------------------------------------------------------------------------

  function slider(min, max, step, value, show) {
    const input = h("input", { type: "range", min, max, step, value });
    const output = h("output", {}, show(Number(value)));
    input.addEventListener("input", () => (output.textContent = show(number(input))));
    return { input, output };
  }

  // Bars for one step: the most likely tokens of the distribution it drew from, the drawn one marked.
  function bars(tok, step, index, greedy) {
    const probs = greedy ? E.softmax(step.logits) : step.probs;
    const order = Array.from(probs.keys()).sort((a, b) => probs[b] - probs[a]).slice(0, 10);
    if (!order.includes(step.token)) order.push(step.token);
    const rows = order.map((id) => h("div", { class: `pg-bar${id === step.token ? " pg-drawn" : ""}` },
      h("span", { class: "pg-bar-token" }, chip(tok, id, 0)),
      h("span", { class: "pg-bar-track" }, h("span", { class: "pg-bar-fill", style: `width: ${100 * probs[id]}%` })),
      h("span", { class: "pg-bar-value" }, `${(100 * probs[id]).toFixed(1)}%`)));
    const how = greedy ? "The model's probabilities for this step; greedy decoding takes the most likely token."
      : "The distribution this step drew from, after temperature, top-k and top-p.";
    return [h("p", { class: "pg-stats" }, `Step ${index + 1}: `, h("strong", {}, piece(tok, step.token).text),
              ` was drawn. ${how}`), ...rows];
  }

  function generateWidget(root, info) {
    const menu = modelMenu(info);
    const prompts = () => info.models[menu.value].prompts;
    const prompt = h("textarea", { rows: 2, spellcheck: "false", "aria-label": "Prompt" }, prompts()[0] || "");
    const temperature = slider(0, 2, 0.05, 0.8, (t) => (t === 0 ? "0 (greedy)" : t.toFixed(2)));
    const topP = slider(0.05, 1, 0.05, 1, (p) => (p === 1 ? "1 (off)" : p.toFixed(2)));
    const topK = h("input", { type: "number", min: 0, max: 2048, value: 50, inputmode: "numeric" });
    const length = h("input", { type: "number", min: 1, max: 300, value: 40, inputmode: "numeric" });
    const seed = h("input", { type: "number", min: 0, value: 0, inputmode: "numeric" });
    const output = h("div", { class: "pg-output", "aria-live": "polite" });
    const stats = h("p", { class: "pg-stats" });
    const chart = h("div", { class: "pg-bars" });
    const start = h("button", { type: "button", class: "pg-primary" }, "Generate");
    const next = h("button", { type: "button" }, "Next token");
    const stop = h("button", { type: "button", disabled: true }, "Stop");
    const examples = h("span", { class: "pg-examples" });
    const showExamples = () => examples.replaceChildren(...prompts().map((p) => h("button",
      { type: "button", class: "pg-example", onclick: () => { prompt.value = p; run().catch(failed); } }, p)));
    showExamples();
    root.replaceChildren(
      labelled("Model", menu),
      labelled("Prompt", prompt),
      h("div", { class: "pg-controls" },
        labelled("Temperature", temperature.input, temperature.output),
        labelled("Top-k", topK, h("small", {}, "0: off")),
        labelled("Top-p", topP.input, topP.output),
        labelled("New tokens", length),
        labelled("Seed", seed)),
      h("div", { class: "pg-buttons" }, start, next, stop, examples),
      output, stats, chart);

    let current = null;  // the generation shown: its step iterator, the steps so far, whether it runs
    const settings = () => ({ temperature: number(temperature.input), topK: number(topK),
                              topP: number(topP.input), seed: number(seed), maxNewTokens: number(length) });
    const forget = () => { if (current) current.stale = true; };
    [prompt, temperature.input, topP.input, topK, length, seed].forEach((el) => el.addEventListener("input", forget));
    menu.addEventListener("change", () => { forget(); showExamples(); });
    const failed = (error) => {
      output.replaceChildren();
      output.dataset.state = "failed";
      chart.replaceChildren();
      report(stats, error);
    };

    async function begin() {
      if (current) current.running = false;
      output.dataset.state = "running";  // from the click on: the model may still be loading
      const name = menu.value;
      const [gpt, tok, eos] = await Promise.all([model(name), modelTokenizer(name), endOfText(name)]);
      const ids = tok.encode(prompt.value);
      const options = { ...settings(), eosId: eos };
      current = { tok, eos, options, iterator: E.generate(gpt, ids.length ? ids : [eos], options), steps: [],
                  seconds: 0, running: false, stale: false, finished: false };
      output.replaceChildren(h("span", { class: "pg-prompt" }, prompt.value));
      output.dataset.ids = "";
      return current;
    }

    function show(generation, index) {
      output.querySelectorAll(".pg-chip.pg-selected").forEach((c) => c.classList.remove("pg-selected"));
      output.querySelectorAll(".pg-chip")[index]?.classList.add("pg-selected");
      chart.replaceChildren(...bars(generation.tok, generation.steps[index], index,
                                    generation.options.temperature === 0));
    }

    // Advance a generation by up to `count` tokens, showing each one as it comes.
    async function advance(generation, count) {
      generation.running = true;
      output.dataset.state = "running";
      start.disabled = next.disabled = true;
      stop.disabled = false;
      let last = performance.now();
      try {
        for (let i = 0; i < count && generation.running; i++) {
          const t0 = performance.now();
          const { value: step, done } = generation.iterator.next();
          generation.seconds += (performance.now() - t0) / 1000;
          if (done) break;
          const index = generation.steps.push(step) - 1;
          const ended = step.token === generation.eos;
          const attributes = { onclick: () => show(generation, index), role: "button", tabindex: 0 };
          output.append(ended
            ? h("span", { class: "pg-chip pg-special", "data-id": step.token, ...attributes },
                h("span", { class: "pg-piece" }, "end of text"))
            : chip(generation.tok, step.token, index, attributes));
          output.dataset.ids = generation.steps.map((s) => s.token).join(",");
          show(generation, index);
          generation.finished = ended || generation.steps.length >= generation.options.maxNewTokens;
          if (generation.finished) break;
          if (performance.now() - last > 30) { await yieldToBrowser(); last = performance.now(); }
        }
      } finally {
        generation.running = false;
        if (generation !== current) return;
        start.disabled = next.disabled = false;
        stop.disabled = true;
        output.dataset.state = generation.finished ? "done" : "paused";
        stats.classList.remove("pg-error");
        const n = generation.steps.length, eos = generation.steps.at(-1)?.token === generation.eos;
        stats.textContent = `${n} token${n === 1 ? "" : "s"} in ${generation.seconds.toFixed(2)} s of ` +
          `computing, ${Math.round(n / Math.max(generation.seconds, 1e-9))} tokens per second` +
          (eos ? " · stopped at the end-of-text token" : "");
      }
    }

    async function run() {
      const generation = await begin();
      await advance(generation, generation.options.maxNewTokens);
    }
    start.addEventListener("click", () => run().catch(failed));
    stop.addEventListener("click", () => { if (current) current.running = false; });
    next.addEventListener("click", async () => {
      try {
        await advance(!current || current.stale || current.finished ? await begin() : current, 1);
      } catch (e) { failed(e); }
    });
    output.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && event.target.classList.contains("pg-chip")) event.target.click();
    });
    return run().catch(failed);
  }

  // --- Ask -------------------------------------------------------------------------------------------------------

  const REQUESTS = [
    ["Rewrite the sentence in the passive voice.", "The cat chased the mouse."],
    ["What is the opposite of 'ancient'?", ""],
    ["Convert 5 kilometers to meters.", ""],
    ["Name three colours of the rainbow.", ""],
  ];

  function askWidget(root) {
    const instruction = h("textarea", { rows: 2, spellcheck: "false", "aria-label": "Instruction" }, REQUESTS[0][0]);
    const input = h("textarea", { rows: 1, spellcheck: "false", "aria-label": "Input" }, REQUESTS[0][1]);
    const answer = h("div", { class: "pg-answer", "aria-live": "polite" });
    const formatted = h("pre", { class: "pg-formatted" });
    const stats = h("p", { class: "pg-stats" });
    const button = h("button", { type: "button", class: "pg-primary" }, "Answer");
    root.replaceChildren(
      labelled("Instruction", instruction),
      labelled("Input (optional)", input),
      h("div", { class: "pg-buttons" }, button, h("span", { class: "pg-examples" }, REQUESTS.map(([i, x]) =>
        h("button", { type: "button", class: "pg-example",
                      onclick: () => { instruction.value = i; input.value = x; ask(); } }, i)))),
      answer, stats, h("details", {}, h("summary", {}, "The prompt as the model reads it"), formatted));

    let asking = 0;
    async function ask() {
      const mine = ++asking;
      button.disabled = true;
      answer.dataset.state = "running";
      answer.textContent = "…";
      try {
        const [info, gpt, tok, eos] = await Promise.all([manifest().then((m) => m.models.instruct),
          model("instruct"), modelTokenizer("instruct"), endOfText("instruct")]);
        // The prompt template comes from llm.instruct.format_prompt; the reader's text fills it in one pass.
        const values = { instruction: instruction.value, input: input.value };
        const text = (input.value ? info.prompt_with_input : info.prompt)
          .replace(/\{(instruction|input)\}/g, (_, key) => values[key]);
        formatted.textContent = text;
        const ids = tok.encodeOrdinary(text);
        const budget = Math.min(64, gpt.config.context_length - ids.length);  // llm.instruct.respond
        const out = [];
        const t0 = performance.now();
        if (budget >= 1) {
          for (const step of E.generate(gpt, ids, { maxNewTokens: budget, eosId: eos, temperature: 0 })) {
            if (mine !== asking) return;
            if (step.token === eos) break;
            out.push(step.token);
            answer.textContent = tok.decode(out);
            await yieldToBrowser();
          }
        }
        answer.textContent = budget < 1 ? "(The request does not fit the model's context of " +
          `${gpt.config.context_length} tokens.)` : tok.decode(out).trim();
        answer.dataset.ids = out.join(",");
        answer.dataset.state = "done";
        stats.textContent = `${ids.length} prompt tokens, ${out.length} answer tokens, ` +
          `${((performance.now() - t0) / 1000).toFixed(2)} s`;
      } finally {
        if (mine === asking) button.disabled = false;
      }
    }
    button.addEventListener("click", () => ask().catch((e) => fail(root, e)));
  }

  // --- Attention -------------------------------------------------------------------------------------------------

  // A colour of the page's palette, as the canvas needs it (rgb numbers), read through a hidden probe element so
  // that it follows whatever theme the site's CSS sets.
  function paletteColour(root, variable) {
    const probe = h("span", { style: `color: var(${variable}); display: none` });
    root.append(probe);
    const rgb = getComputedStyle(probe).color.match(/[\d.]+/g).slice(0, 3).map(Number);
    probe.remove();
    return rgb;
  }

  function attentionWidget(root, info) {
    const menu = modelMenu(info);
    const text = h("input", { type: "text", spellcheck: "false", "aria-label": "Text",
                              value: "The dog chased the cat up the tree, and then it barked at the cat." });
    const layer = h("select", { "aria-label": "Layer" });
    const head = h("select", { "aria-label": "Head" });
    const canvas = h("canvas", { class: "pg-heatmap", role: "img" });
    const readout = h("p", { class: "pg-stats" }, "Point at a square to read its weight.");
    root.replaceChildren(labelled("Model", menu), labelled("Text", text),
      h("div", { class: "pg-controls" }, labelled("Layer", layer), labelled("Head", head)),
      h("div", { class: "pg-heatmap-frame" }, canvas), readout);

    let state = null;
    // Layers and heads offered for the chosen model, keeping the reader's choice where the model has it.
    function offer(select, count) {
      const chosen = Math.min(number(select) || 1, count);
      select.replaceChildren(...Array.from({ length: count }, (_, i) => h("option", { value: i + 1 }, `${i + 1}`)));
      select.value = chosen;
    }
    let computing = 0;  // counts the computations: one overtaken while it loaded its model shows nothing
    async function compute() {
      const mine = ++computing;
      root.dataset.state = "busy";
      try {
        const name = menu.value;
        const [gpt, tok] = await Promise.all([model(name), modelTokenizer(name)]);
        if (mine !== computing) return;
        offer(layer, gpt.config.n_layer);
        offer(head, gpt.config.n_head);
        const ids = tok.encode(text.value).slice(0, gpt.config.context_length);
        state = { tok, ids, weights: ids.length ? gpt.attention(ids) : null };
        readout.classList.remove("pg-error");
        readout.textContent = "Point at a square to read its weight.";
        draw();
        root.dataset.state = "done";
      } catch (error) {
        if (mine !== computing) return;
        state = null;
        canvas.width = canvas.height = 0;
        canvas.style.width = canvas.style.height = "0";
        report(readout, error);
        root.dataset.state = "failed";
      }
    }

    function draw() {
      const { tok, ids, weights } = state;
      const rows = weights ? weights[number(layer) - 1][number(head) - 1] : [];
      api.lastAttention = rows.map((row) => Array.from(row));
      const labels = ids.map((id) => piece(tok, id).text);
      // Squares as large as the frame allows, but never smaller than a legible label: the frame scrolls instead.
      const context = canvas.getContext("2d");
      const frameWidth = canvas.parentElement.clientWidth || 600;
      let cell = 26, font;
      const measure = () => {
        font = `${Math.min(12, cell - 3)}px system-ui, sans-serif`;
        context.font = font;
        return Math.ceil(Math.max(20, ...labels.map((l) => context.measureText(l).width))) + 8;
      };
      let margin = measure();
      cell = Math.max(15, Math.min(26, Math.floor((frameWidth - margin) / Math.max(ids.length, 1))));
      margin = measure();
      const size = margin + cell * ids.length, ratio = window.devicePixelRatio || 1;
      canvas.width = size * ratio;
      canvas.height = size * ratio;
      canvas.style.width = canvas.style.height = `${size}px`;
      context.scale(ratio, ratio);
      context.font = font;
      const [ar, ag, ab] = paletteColour(root, "--pg-accent");
      const [tr, tg, tb] = paletteColour(root, "--pg-text");
      const [lr, lg, lb] = paletteColour(root, "--pg-line");
      context.fillStyle = `rgb(${tr}, ${tg}, ${tb})`;
      context.textBaseline = "middle";
      labels.forEach((label, i) => {
        context.textAlign = "right";
        context.fillText(label, margin - 6, margin + (i + 0.5) * cell);
        context.save();
        context.translate(margin + (i + 0.5) * cell, margin - 6);
        context.rotate(-Math.PI / 2);
        context.textAlign = "left";
        context.fillText(label, 0, 0);
        context.restore();
      });
      rows.forEach((row, i) => row.forEach((w, j) => {
        context.fillStyle = `rgba(${ar}, ${ag}, ${ab}, ${w})`;
        context.fillRect(margin + j * cell, margin + i * cell, cell, cell);
      }));
      context.strokeStyle = `rgb(${lr}, ${lg}, ${lb})`;
      context.strokeRect(margin + 0.5, margin + 0.5, cell * ids.length - 1, cell * ids.length - 1);
      canvas.setAttribute("aria-label", `Attention weights of layer ${number(layer)}, head ${number(head)}`);
      state.geometry = { margin, cell, labels, rows };
    }

    canvas.addEventListener("mousemove", (event) => {
      if (!state?.geometry) return;
      const { margin, cell, labels, rows } = state.geometry;
      const box = canvas.getBoundingClientRect();
      const i = Math.floor((event.clientY - box.top - margin) / cell);
      const j = Math.floor((event.clientX - box.left - margin) / cell);
      if (i >= 0 && j >= 0 && i < rows.length && j <= i) {
        readout.textContent = `“${labels[i]}” (position ${i + 1}) gives ${(100 * rows[i][j]).toFixed(1)}% of its ` +
          `attention to “${labels[j]}” (position ${j + 1})`;
      }
    });
    let pending = null;
    text.addEventListener("input", () => {
      clearTimeout(pending);
      pending = setTimeout(compute, 120);
    });
    menu.addEventListener("change", compute);
    layer.addEventListener("change", () => state && draw());
    head.addEventListener("change", () => state && draw());
    window.addEventListener("resize", () => state && draw());
    // The canvas holds colours, not CSS: draw again when the site's theme changes (an attribute or class of
    // <html> or <body>, as the site's theme toggles set them, or the system's light or dark preference).
    const redraw = () => state && draw();
    const observer = new MutationObserver(redraw);
    for (const el of [document.documentElement, document.body]) {
      observer.observe(el, { attributes: true, attributeFilter: ["class", "data-theme"] });
    }
    matchMedia("(prefers-color-scheme: dark)").addEventListener("change", redraw);
    return compute();
  }

  // --- Start -----------------------------------------------------------------------------------------------------

  // For the tests, the benchmark and readers curious enough to open the console.
  const api = { engine: E, manifest, tokenizer, model, lastAttention: null };
  window.bookPlayground = api;
  const widgets = { tokens: tokensWidget, generate: generateWidget, ask: askWidget, attention: attentionWidget };
  api.ready = (async () => {
    const status = parts.status;
    try {
      const info = await manifest();
      const started = Object.entries(widgets).filter(([name]) => parts[name]).map(([name, widget]) =>
        Promise.resolve(widget(parts[name], info)).catch((e) => fail(parts[name], e)));
      await Promise.all(started);
      if (status) {
        status.textContent = "The models run in this browser: nothing you type leaves your machine.";
      }
    } catch (error) {
      console.error(error);
      if (status) {
        status.textContent = `The playground could not load its models (${error.message}). It needs the page to ` +
          "come from a web server, even a local one: see the README.";
        status.classList.add("pg-error");
      }
    }
  })();
})();
