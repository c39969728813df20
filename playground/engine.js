// The book's models in the browser: byte-level BPE (llm.bpe), the forward passes of GPT (llm.model, llm.attention)
// and of the modern model (llm.modern), and the sampler (llm.sampling), written again in plain JavaScript. Nothing
// here touches the page, so the same file runs under Node for quick checks. The files it reads are written by
// llm.webexport (see playground.qmd).
"use strict";

const BookEngine = (() => {
  const utf8 = new TextEncoder();

  // --- Tokenizer -------------------------------------------------------------------------------------------------

  // Bytes are kept as "binary strings" (one char per byte, code 0-255): they concatenate and key a Map cheaply.
  const binary = (bytes) => String.fromCharCode(...bytes);
  const toBytes = (text) => Uint8Array.from(text, (c) => c.charCodeAt(0));

  class BPETokenizer {
    // data: {pattern, specials, byte_order, merges: [left, right, left, right, ...]} as llm.webexport writes it.
    // Token i < 256 is the byte byte_order[i]; token 256 + m is merge m; the special tokens follow.
    constructor(data) {
      this.vocab = data.byte_order.map((b) => String.fromCharCode(b));
      for (let m = 0; m < data.merges.length; m += 2) {
        this.vocab.push(this.vocab[data.merges[m]] + this.vocab[data.merges[m + 1]]);
      }
      this.ranks = new Map(this.vocab.map((token, id) => [token, id]));
      this.specials = data.specials;
      this.specialIds = new Map(this.specials.map((s, i) => [s, this.vocab.length + i]));
      this.vocabSize = this.vocab.length + this.specials.length;
      this.pattern = new RegExp(data.pattern, "gu");
      this.chunkCache = new Map();
    }

    // Ids of one pre-split chunk: repeatedly merge the adjacent pair that forms the lowest-id token, leftmost
    // first on a tie (BPETokenizer._merge_chunk).
    mergeChunk(chunk) {
      const whole = this.ranks.get(chunk);
      if (whole !== undefined) return [whole];
      const parts = Array.from(chunk);
      while (parts.length > 1) {
        let best = Infinity, at = -1;
        for (let i = 0; i + 1 < parts.length; i++) {
          const rank = this.ranks.get(parts[i] + parts[i + 1]);
          if (rank !== undefined && rank < best) { best = rank; at = i; }
        }
        if (at < 0) break;
        parts.splice(at, 2, parts[at] + parts[at + 1]);
      }
      return parts.map((part) => this.ranks.get(part));
    }

    encodeOrdinary(text) {
      const ids = [];
      for (const [chunk] of text.matchAll(this.pattern)) {
        let chunkIds = this.chunkCache.get(chunk);
        if (chunkIds === undefined) {
          chunkIds = this.mergeChunk(binary(utf8.encode(chunk)));
          if (this.chunkCache.size < 100000) this.chunkCache.set(chunk, chunkIds);
        }
        for (const id of chunkIds) ids.push(id);
      }
      return ids;
    }

    // With allowSpecial, special-token strings in the text become their own ids (encode(text, "all") in Python);
    // otherwise they are ordinary text (encode(text)).
    encode(text, allowSpecial = false) {
      if (!allowSpecial || !this.specials.length) return this.encodeOrdinary(text);
      const escaped = [...this.specials].sort((a, b) => b.length - a.length)
        .map((s) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
      const ids = [];
      text.split(new RegExp(`(${escaped.join("|")})`)).forEach((part, i) => {
        if (i % 2) ids.push(this.specialIds.get(part));
        else ids.push(...this.encodeOrdinary(part));
      });
      return ids;
    }

    tokenBytes(id) {
      if (id < this.vocab.length) return toBytes(this.vocab[id]);
      return utf8.encode(this.specials[id - this.vocab.length]);
    }

    decode(ids) {
      return new TextDecoder().decode(toBytes(ids.map((id) => binary(this.tokenBytes(id))).join("")));
    }
  }

  // --- Models ----------------------------------------------------------------------------------------------------

  // A safetensors file: 8 bytes of header length, a JSON header (name -> dtype, shape, byte range; __metadata__),
  // then the data. llm.modelio stores the architecture's name and config (as JSON) in the metadata.
  function readSafetensors(buffer) {
    const headerLength = Number(new DataView(buffer).getBigUint64(0, true));
    const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 8, headerLength)));
    const start = 8 + headerLength;
    const tensors = {};
    for (const [name, info] of Object.entries(header)) {
      if (name === "__metadata__") continue;
      if (info.dtype !== "F32") throw new Error(`${name}: expected float32 weights, got ${info.dtype}`);
      const [begin, end] = info.data_offsets;
      // A view when the data is aligned (safetensors pads its header to 8 bytes), a copy otherwise.
      tensors[name] = (start + begin) % 4 === 0
        ? new Float32Array(buffer, start + begin, (end - begin) / 4)
        : new Float32Array(buffer.slice(start + begin, start + end));
    }
    return { tensors, metadata: header.__metadata__ || {} };
  }

  // y = W x (+ b) for W of shape [out, in], row-major as PyTorch stores nn.Linear weights; b may be null.
  function linear(W, b, x) {
    const n = x.length, out = W.length / n, y = new Float32Array(out);
    for (let o = 0; o < out; o++) {
      let sum = b ? b[o] : 0, row = o * n, i = 0;
      for (; i + 3 < n; i += 4) {
        sum += W[row + i] * x[i] + W[row + i + 1] * x[i + 1] + W[row + i + 2] * x[i + 2] + W[row + i + 3] * x[i + 3];
      }
      for (; i < n; i++) sum += W[row + i] * x[i];
      y[o] = sum;
    }
    return y;
  }

  // torch.nn.LayerNorm: biased variance; `bias` null for a layer norm without a shift.
  function layerNorm(x, weight, bias, eps) {
    const n = x.length;
    let mean = 0;
    for (let i = 0; i < n; i++) mean += x[i];
    mean /= n;
    let variance = 0;
    for (let i = 0; i < n; i++) variance += (x[i] - mean) ** 2;
    const scale = 1 / Math.sqrt(variance / n + eps);
    const y = new Float32Array(n);
    for (let i = 0; i < n; i++) y[i] = (x[i] - mean) * scale * weight[i] + (bias ? bias[i] : 0);
    return y;
  }

  // RMSNorm (llm.modern): x / sqrt(mean(x²) + eps) * weight, written into `out` (which may be x itself).
  function rmsNorm(x, weight, eps, out = new Float32Array(x.length)) {
    let squares = 0;
    for (let i = 0; i < x.length; i++) squares += x[i] * x[i];
    const scale = 1 / Math.sqrt(squares / x.length + eps);
    for (let i = 0; i < x.length; i++) out[i] = x[i] * scale * weight[i];
    return out;
  }

  const GELU_C = Math.sqrt(2 / Math.PI);
  const gelu = (x) => 0.5 * x * (1 + Math.tanh(GELU_C * (x + 0.044715 * x * x * x)));  // the tanh form, as GPT-2
  const silu = (x) => x / (1 + Math.exp(-x));
  const ACTIVATIONS = { gelu, relu2: (x) => (x > 0 ? x * x : 0) };

  function addInto(x, y) {
    for (let i = 0; i < x.length; i++) x[i] += y[i];
  }

  // One query position attending over the cached keys and values of positions 0..pos (causal), or only the last
  // `window` of them (sliding-window attention). Query head h reads key/value head h / group (grouped-query
  // attention); scores are scaled by 1 / sqrt(headDim). Returns the heads' outputs side by side and each head's
  // weights over positions 0..pos.
  function attend(q, keys, values, pos, { nHead, nKvHead, headDim, window }) {
    const group = nHead / nKvHead, kvWidth = nKvHead * headDim, first = window ? Math.max(0, pos - window + 1) : 0;
    const mixed = new Float32Array(nHead * headDim), heads = [];
    for (let h = 0; h < nHead; h++) {
      const qOffset = h * headDim, kvOffset = Math.floor(h / group) * headDim;
      const weights = new Float32Array(pos + 1);
      let max = -Infinity;
      for (let j = first; j <= pos; j++) {
        let dot = 0;
        for (let i = 0; i < headDim; i++) dot += q[qOffset + i] * keys[j * kvWidth + kvOffset + i];
        weights[j] = dot / Math.sqrt(headDim);
        if (weights[j] > max) max = weights[j];
      }
      let total = 0;
      for (let j = first; j <= pos; j++) { weights[j] = Math.exp(weights[j] - max); total += weights[j]; }
      for (let j = first; j <= pos; j++) {
        weights[j] /= total;
        for (let i = 0; i < headDim; i++) mixed[qOffset + i] += weights[j] * values[j * kvWidth + kvOffset + i];
      }
      heads.push(weights);
    }
    return { mixed, heads };
  }

  // What both architectures share: a stack of pre-norm blocks, x + attention(norm(x)) then x + ffn(norm(x)), run
  // one token at a time over a KV cache, then a final norm and the output layer. A subclass says how a token enters
  // (embed), how it normalises (norm), how a block makes queries, keys and values (queryKeyValue) and how its
  // feed-forward network computes (feedForward); each block holds attnNorm, attnOut ([weight, bias]) and ffnNorm.
  class Decoder {
    constructor(config, attention) {
      this.config = config;
      this.shape = attention;  // {nHead, nKvHead, headDim, window}
    }

    // Keys and values of every layer for up to context_length positions (KVCache in llm.attention); `start` is the
    // index, in the sequence being generated, of the token at position 0.
    newCache() {
      const { nKvHead, headDim } = this.shape, size = this.config.context_length * nKvHead * headDim;
      return { start: 0, length: 0, keys: this.blocks.map(() => new Float32Array(size)),
               values: this.blocks.map(() => new Float32Array(size)) };
    }

    // Run one token at the next position of `cache`; return the next-token logits if `wantLogits`. With `attention`
    // (an array per layer), each layer's weights for this query, one Float32Array per head, are pushed onto it.
    step(token, cache, wantLogits = true, attention = null) {
      const c = this.config, pos = cache.length, kvWidth = this.shape.nKvHead * this.shape.headDim;
      if (pos >= c.context_length) throw new Error(`position ${pos} exceeds the context length ${c.context_length}`);
      const x = this.embed(token, pos);
      this.blocks.forEach((block, l) => {
        const [q, k, v] = this.queryKeyValue(block, this.norm(x, block.attnNorm), pos);
        cache.keys[l].set(k, pos * kvWidth);
        cache.values[l].set(v, pos * kvWidth);
        const { mixed, heads } = attend(q, cache.keys[l], cache.values[l], pos, this.shape);
        if (attention) attention[l].push(heads);
        addInto(x, linear(...block.attnOut, mixed));
        addInto(x, this.feedForward(block, this.norm(x, block.ffnNorm)));
      });
      cache.length = pos + 1;
      if (!wantLogits) return null;
      return linear(this.output, null, this.norm(x, this.finalNorm));
    }

    // Logits after the sequence `ids`, of which the model sees at most the last context_length, as in
    // llm.generate: `cache` holds the window's earlier tokens, so only new ones are run; once the window slides,
    // the whole window is run again from position 0, as generate does for both architectures.
    next(ids, cache) {
      const start = Math.max(0, ids.length - this.config.context_length);
      if (cache.start !== start || cache.length >= ids.length - start) Object.assign(cache, { start, length: 0 });
      let logits = null;
      for (let i = start + cache.length; i < ids.length; i++) logits = this.step(ids[i], cache, i === ids.length - 1);
      return logits;
    }

    // Attention weights of every layer and head for `ids` (at most context_length of them):
    // result[layer][head][query] is a Float32Array over keys 0..query.
    attention(ids) {
      const cache = this.newCache(), result = this.blocks.map(() => []);
      ids.slice(0, this.config.context_length).forEach((id) => this.step(id, cache, false, result));
      return result.map((rows) => rows[0].map((_, h) => rows.map((heads) => heads[h])));
    }
  }

  // Architecture "gpt" (llm.model.GPT): learned positions, layer norms with optional biases, one fused
  // query/key/value projection, a GELU network four times as wide, tied or separate output layer.
  class GPT extends Decoder {
    constructor(tensors, c) {
      super(c, { nHead: c.n_head, nKvHead: c.n_kv_head, headDim: c.d_model / c.n_head, window: null });
      this.w = tensors;
      const pair = (name) => [tensors[`${name}.weight`], tensors[`${name}.bias`] || null];
      this.finalNorm = pair("ln_f");
      this.output = c.tie_weights ? tensors["wte.weight"] : tensors["lm_head.weight"];
      this.blocks = Array.from({ length: c.n_layer }, (_, l) => ({
        attnNorm: pair(`blocks.${l}.ln_1`), qkv: pair(`blocks.${l}.attn.qkv`), attnOut: pair(`blocks.${l}.attn.proj`),
        ffnNorm: pair(`blocks.${l}.ln_2`), fc: pair(`blocks.${l}.mlp.fc`), fcOut: pair(`blocks.${l}.mlp.proj`),
      }));
    }

    embed(token, pos) {
      const d = this.config.d_model, wte = this.w["wte.weight"], wpe = this.w["wpe.weight"];
      return Float32Array.from({ length: d }, (_, i) => wte[token * d + i] + wpe[pos * d + i]);
    }

    norm(x, [weight, bias]) {
      return layerNorm(x, weight, bias, 1e-5);  // nn.LayerNorm's default eps
    }

    queryKeyValue(block, x) {
      const qkv = linear(...block.qkv, x), d = this.config.d_model;
      const kvWidth = this.shape.nKvHead * this.shape.headDim;
      return [qkv.subarray(0, d), qkv.subarray(d, d + kvWidth), qkv.subarray(d + kvWidth)];
    }

    feedForward(block, x) {
      return linear(...block.fcOut, linear(...block.fc, x).map(gelu));
    }
  }

  // RoPE's angle per position for each of the headDim / 2 pairs of a head, with the config's scaling
  // (rope_inv_freq in llm.modern), in float32 as PyTorch computes it.
  function ropeInvFreq(c) {
    const d = c.head_dim, factor = c.rope_factor, f = Math.fround;
    const theta = c.rope_scaling === "ntk" ? c.rope_theta * factor ** (d / (d - 2)) : c.rope_theta;
    const inv = Float32Array.from({ length: d / 2 }, (_, i) => 1 / f(f(theta) ** f((2 * i) / d)));
    if (c.rope_scaling === "linear") return inv.map((v) => v / factor);
    if (c.rope_scaling !== "llama3") return inv;
    const original = c.rope_original_context, low = c.rope_low_freq_factor, high = c.rope_high_freq_factor;
    return inv.map((v) => {
      const wavelength = (2 * Math.PI) / v;
      const scaled = wavelength > original / low ? v / factor : v;  // long wavelengths: interpolated
      if (wavelength > original / low || wavelength < original / high) return scaled;
      const blend = (original / wavelength - low) / (high - low);
      return ((1 - blend) * scaled) / factor + blend * scaled;
    });
  }

  // Turn every head of x [heads * headDim] in place by its position's angles (apply_rope): pair i is
  // (x[i], x[i + headDim / 2]), the two halves of the head, as rotate_half pairs them.
  function rotate(x, headDim, cos, sin) {
    const half = headDim / 2;
    for (let offset = 0; offset < x.length; offset += headDim) {
      for (let i = 0; i < half; i++) {
        const a = x[offset + i], b = x[offset + half + i];
        x[offset + i] = a * cos[i] - b * sin[i];
        x[offset + half + i] = b * cos[i] + a * sin[i];
      }
    }
  }

  // A model file the page understands but cannot run; the page shows its message to the reader as it is.
  class UnsupportedModel extends Error {}

  // Architecture "modern" (llm.modern.ModernGPT): RMSNorm (or a layer norm without shift), rotary positions (or
  // learned ones), separate query, key and value projections without biases, QK-norm (an RMSNorm over each head's
  // queries and keys, before RoPE), grouped-query and optionally sliding-window attention, a SwiGLU, ReLU² or GELU
  // network, and an untied or tied output layer. Mixtures of experts are refused.
  class ModernGPT extends Decoder {
    constructor(tensors, c) {
      if (c.n_expert > 0) {
        throw new UnsupportedModel(`The playground cannot run this model: it is a mixture of experts ` +
                                   `(${c.n_expert} per block), and the page runs dense models only.`);
      }
      super(c, { nHead: c.n_head, nKvHead: c.n_kv_head, headDim: c.head_dim, window: c.sliding_window });
      this.w = tensors;
      const weight = (name) => tensors[`${name}.weight`];
      this.finalNorm = [weight("final_norm")];
      this.output = c.tie_embeddings ? weight("tok_emb") : weight("lm_head");
      this.invFreq = c.position === "rope" ? ropeInvFreq(c) : null;
      this.blocks = Array.from({ length: c.n_layer }, (_, l) => {
        const get = (name) => weight(`blocks.${l}.${name}`);
        return { attnNorm: [get("attn_norm")], q: get("attn.q_proj"), k: get("attn.k_proj"), v: get("attn.v_proj"),
                 qNorm: get("attn.q_norm"), kNorm: get("attn.k_norm"), attnOut: [get("attn.o_proj"), null],
                 ffnNorm: [get("ffn_norm")], gate: get("ffn.gate_proj"), up: get("ffn.up_proj"),
                 down: get("ffn.down_proj") };
      });
    }

    embed(token, pos) {
      const d = this.config.d_model, emb = this.w["tok_emb.weight"], learned = this.w["pos_emb.weight"];
      return Float32Array.from({ length: d }, (_, i) => emb[token * d + i] + (learned ? learned[pos * d + i] : 0));
    }

    norm(x, [weight]) {
      const c = this.config;
      return c.norm === "rmsnorm" ? rmsNorm(x, weight, c.norm_eps) : layerNorm(x, weight, null, c.norm_eps);
    }

    queryKeyValue(block, x, pos) {
      const hd = this.shape.headDim, eps = this.config.norm_eps;
      const q = linear(block.q, null, x), k = linear(block.k, null, x), v = linear(block.v, null, x);
      if (block.qNorm) {
        for (let o = 0; o < q.length; o += hd) rmsNorm(q.subarray(o, o + hd), block.qNorm, eps, q.subarray(o, o + hd));
        for (let o = 0; o < k.length; o += hd) rmsNorm(k.subarray(o, o + hd), block.kNorm, eps, k.subarray(o, o + hd));
      }
      if (this.invFreq) {
        const angles = this.invFreq.map((f) => pos * f);  // float32, as rope_cos_sin computes them
        const cos = angles.map(Math.cos), sin = angles.map(Math.sin);
        rotate(q, hd, cos, sin);
        rotate(k, hd, cos, sin);
      }
      return [q, k, v];
    }

    feedForward(block, x) {
      const hidden = linear(block.up, null, x), kind = this.config.ffn;
      if (kind === "swiglu") {
        const gate = linear(block.gate, null, x);
        for (let i = 0; i < hidden.length; i++) hidden[i] *= silu(gate[i]);
      } else {
        for (let i = 0; i < hidden.length; i++) hidden[i] = ACTIVATIONS[kind](hidden[i]);
      }
      return linear(block.down, null, hidden);
    }
  }

  const ARCHITECTURES = { gpt: GPT, modern: ModernGPT };

  // The model of a file written by llm.modelio.save_model, of the architecture its metadata names.
  function loadModel(buffer) {
    const { tensors, metadata } = readSafetensors(buffer);
    const Architecture = ARCHITECTURES[metadata.architecture];
    if (!Architecture) {
      throw new UnsupportedModel(`The playground cannot run this model: its architecture is ` +
        `${JSON.stringify(metadata.architecture)}, and the page runs ${Object.keys(ARCHITECTURES).join(" and ")}.`);
    }
    return new Architecture(tensors, JSON.parse(metadata.model_config));
  }

  // --- Sampling --------------------------------------------------------------------------------------------------

  function argmax(values) {
    let best = 0;
    for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;  // the first of equal maxima
    return best;
  }

  function softmax(logits) {
    let max = -Infinity;
    for (const v of logits) if (v > max) max = v;
    const out = new Float64Array(logits.length);
    let total = 0;
    for (let i = 0; i < logits.length; i++) { out[i] = Math.exp(logits[i] - max); total += out[i]; }
    for (let i = 0; i < out.length; i++) out[i] /= total;
    return out;
  }

  // The distribution a Sampler draws from (llm.sampling.Sampler.distribution): one-hot on the most likely token when
  // temperature is 0; otherwise softmax(logits / temperature) after top-k (ties with the k-th kept) and top-p (a
  // token is dropped when the tokens ranked above it already reach p).
  function distribution(logits, { temperature = 1, topK = 0, topP = 1 } = {}) {
    if (temperature === 0) {
      const onehot = new Float64Array(logits.length);
      onehot[argmax(logits)] = 1;
      return onehot;
    }
    const scaled = Float64Array.from(logits, (v) => v / temperature);
    if (topK > 0 && topK < scaled.length) {
      const kth = Float64Array.from(scaled).sort()[scaled.length - topK];
      for (let i = 0; i < scaled.length; i++) if (scaled[i] < kth) scaled[i] = -Infinity;
    }
    if (topP < 1) {
      const probs = softmax(scaled);
      const order = Array.from(probs.keys()).sort((a, b) => probs[b] - probs[a]);
      let above = 0;
      for (const i of order) {
        if (above >= topP) scaled[i] = -Infinity;
        above += probs[i];
      }
    }
    return softmax(scaled);
  }

  // A small seeded generator (mulberry32): the same seed gives the same draws, in every browser.
  function random(seed) {
    let state = seed >>> 0;
    return () => {
      state = (state + 0x6d2b79f5) >>> 0;
      let t = state;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
  }

  function draw(probs, rng) {
    let u = rng(), last = 0;
    for (let i = 0; i < probs.length; i++) {
      if (probs[i] > 0) {
        last = i;
        u -= probs[i];
        if (u < 0) return i;
      }
    }
    return last;  // rounding left a sliver of u: the last token with any probability
  }

  // Extend `ids` one token at a time (llm.generate.generate). Yields, per step, the token, the logits and the
  // distribution it was drawn from; stops after maxNewTokens or at eosId.
  function* generate(model, ids, { maxNewTokens = 40, eosId = null, seed = 0, ...sampling } = {}) {
    const sequence = [...ids], cache = model.newCache(), rng = random(seed);
    for (let step = 0; step < maxNewTokens; step++) {
      const logits = model.next(sequence, cache);
      const probs = distribution(logits, sampling);
      const token = sampling.temperature === 0 ? argmax(logits) : draw(probs, rng);
      sequence.push(token);
      yield { token, logits, probs };
      if (token === eosId) return;
    }
  }

  return { BPETokenizer, loadModel, UnsupportedModel, distribution, softmax, generate };
})();

if (typeof module !== "undefined") module.exports = BookEngine;
