// The book's models in the browser: byte-level BPE (llm.bpe), the GPT forward pass (llm.model, llm.attention) and
// the sampler (llm.sampling), written again in plain JavaScript. Nothing here touches the page, so the same file
// runs under Node for quick checks. The files it reads are written by llm.webexport (see playground.qmd).
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

  // --- Model -----------------------------------------------------------------------------------------------------

  // A safetensors file: 8 bytes of header length, a JSON header (name -> dtype, shape, byte range; __metadata__),
  // then the data. llm.modelio stores the architecture's config as JSON in the metadata.
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

  // y = W x (+ b) for W of shape [out, in], row-major as PyTorch stores nn.Linear weights.
  function linear(W, b, x, out) {
    const n = x.length, y = new Float32Array(out);
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

  function layerNorm(x, weight, bias) {
    const n = x.length;
    let mean = 0;
    for (let i = 0; i < n; i++) mean += x[i];
    mean /= n;
    let variance = 0;
    for (let i = 0; i < n; i++) variance += (x[i] - mean) ** 2;
    const scale = 1 / Math.sqrt(variance / n + 1e-5);  // torch.nn.LayerNorm: biased variance, eps 1e-5
    const y = new Float32Array(n);
    for (let i = 0; i < n; i++) y[i] = (x[i] - mean) * scale * weight[i] + (bias ? bias[i] : 0);
    return y;
  }

  const GELU_C = Math.sqrt(2 / Math.PI);
  const gelu = (x) => 0.5 * x * (1 + Math.tanh(GELU_C * (x + 0.044715 * x * x * x)));  // the tanh form, as GPT-2

  class GPT {
    // A model saved by llm.modelio (architecture "gpt"): pre-norm blocks, learned positions, GELU, optional biases,
    // grouped-query attention, tied or separate output layer.
    constructor(buffer) {
      const { tensors, metadata } = readSafetensors(buffer);
      if ((metadata.architecture || "gpt") !== "gpt") throw new Error(`unknown architecture ${metadata.architecture}`);
      this.config = JSON.parse(metadata.model_config);
      const c = this.config;
      this.headDim = c.d_model / c.n_head;
      this.w = tensors;
      this.output = c.tie_weights ? tensors["wte.weight"] : tensors["lm_head.weight"];
      this.blocks = [];
      for (let l = 0; l < c.n_layer; l++) {
        const get = (name) => tensors[`blocks.${l}.${name}`];
        this.blocks.push({
          ln1: [get("ln_1.weight"), get("ln_1.bias")], ln2: [get("ln_2.weight"), get("ln_2.bias")],
          qkv: [get("attn.qkv.weight"), get("attn.qkv.bias")], proj: [get("attn.proj.weight"), get("attn.proj.bias")],
          fc: [get("mlp.fc.weight"), get("mlp.fc.bias")], fcOut: [get("mlp.proj.weight"), get("mlp.proj.bias")],
        });
      }
    }

    // Keys and values of every layer for up to context_length positions (KVCache in llm.attention); `start` is the
    // index, in the sequence being generated, of the token at position 0.
    newCache() {
      const c = this.config, size = c.context_length * c.n_kv_head * this.headDim;
      return { start: 0, length: 0, keys: this.blocks.map(() => new Float32Array(size)),
               values: this.blocks.map(() => new Float32Array(size)) };
    }

    // Run one token at the next position of `cache`; return the next-token logits if `wantLogits`. With `attention`
    // (an array per layer), each layer's weights for this query, one Float32Array per head, are pushed onto it.
    step(token, cache, wantLogits = true, attention = null) {
      const c = this.config, hd = this.headDim, pos = cache.length;
      if (pos >= c.context_length) throw new Error(`position ${pos} exceeds the context length ${c.context_length}`);
      const d = c.d_model, group = c.n_head / c.n_kv_head, kvWidth = c.n_kv_head * hd;
      let x = new Float32Array(d);
      const wte = this.w["wte.weight"], wpe = this.w["wpe.weight"];
      for (let i = 0; i < d; i++) x[i] = wte[token * d + i] + wpe[pos * d + i];
      this.blocks.forEach((block, l) => {
        const qkv = linear(block.qkv[0], block.qkv[1], layerNorm(x, ...block.ln1), d + 2 * kvWidth);
        const keys = cache.keys[l], values = cache.values[l];
        keys.set(qkv.subarray(d, d + kvWidth), pos * kvWidth);
        values.set(qkv.subarray(d + kvWidth), pos * kvWidth);
        const mixed = new Float32Array(d), heads = [];
        for (let h = 0; h < c.n_head; h++) {
          const kvOffset = Math.floor(h / group) * hd;  // query head h reads key/value head h // group
          const scores = new Float32Array(pos + 1);
          let max = -Infinity;
          for (let j = 0; j <= pos; j++) {
            let dot = 0;
            for (let i = 0; i < hd; i++) dot += qkv[h * hd + i] * keys[j * kvWidth + kvOffset + i];
            scores[j] = dot / Math.sqrt(hd);
            if (scores[j] > max) max = scores[j];
          }
          let total = 0;
          for (let j = 0; j <= pos; j++) { scores[j] = Math.exp(scores[j] - max); total += scores[j]; }
          for (let j = 0; j <= pos; j++) {
            const weight = scores[j] / total;
            scores[j] = weight;
            for (let i = 0; i < hd; i++) mixed[h * hd + i] += weight * values[j * kvWidth + kvOffset + i];
          }
          heads.push(scores);
        }
        if (attention) attention[l].push(heads);
        const attended = linear(block.proj[0], block.proj[1], mixed, d);
        for (let i = 0; i < d; i++) x[i] += attended[i];
        const hidden = linear(block.fc[0], block.fc[1], layerNorm(x, ...block.ln2), 4 * d);
        for (let i = 0; i < hidden.length; i++) hidden[i] = gelu(hidden[i]);
        const out = linear(block.fcOut[0], block.fcOut[1], hidden, d);
        for (let i = 0; i < d; i++) x[i] += out[i];
      });
      cache.length = pos + 1;
      if (!wantLogits) return null;
      return linear(this.output, null, layerNorm(x, this.w["ln_f.weight"], this.w["ln_f.bias"]), c.vocab_size);
    }

    // Logits after the sequence `ids`, of which the model sees at most the last context_length, as in
    // llm.generate: `cache` holds the window's earlier tokens, so only new ones are run; once the window slides
    // (learned positions cannot), the whole window is run again from position 0.
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

  return { BPETokenizer, GPT, distribution, softmax, generate };
})();

if (typeof module !== "undefined") module.exports = BookEngine;
