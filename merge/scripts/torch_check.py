#!/usr/bin/env python3
"""Independent check of a `lorakit merge` output with PyTorch (not lorakit's Go code).

Reads safetensors with a few lines of Python, builds the HF-convention Llama of the shared performance anchors
(../../../shared/anchors/scripts/torch_bench.py, written outside this repo), applies the PEFT adapter unmerged
(PEFT's rank_pattern/alpha_pattern rule `re.match(rf"(.*\\.)?({key})$", module)`, alpha/r or alpha/sqrt(r)),
and compares with the merged folder: max |W' - W - s*B@A| per tensor and max |logit| difference.

  python3 merge/scripts/torch_check.py BASE ADAPTER MERGED [--weight 1.0] [--anchors DIR]
Llama-only (tied or untied head, no biases, head_dim = hidden/heads), f32/bf16/f16 weights.
"""
import argparse, json, math, os, re, struct, sys

import torch

DT = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b, end = e["data_offsets"]
        t = torch.frombuffer(bytearray(data[b:end]), dtype=DT[e["dtype"]]) if end > b else torch.empty(0, dtype=DT[e["dtype"]])
        out[name] = t.reshape(e["shape"]).float()
    return out


def read_folder(d):
    idx = os.path.join(d, "model.safetensors.index.json")
    if os.path.exists(idx):
        files = sorted(set(json.load(open(idx))["weight_map"].values()))
        out = {}
        for f in files:
            out.update(read_safetensors(os.path.join(d, f)))
        return out
    return read_safetensors(os.path.join(d, "model.safetensors"))


def pattern_key(keys, module):  # PEFT get_pattern_key
    for k in keys:
        if re.match(rf"(.*\.)?({k})$", module):
            return k
    return module


def build(tb, cfg, w):
    c = dict(hidden=cfg["hidden_size"], inter=cfg["intermediate_size"], layers=cfg["num_hidden_layers"],
             heads=cfg["num_attention_heads"], kv_heads=cfg.get("num_key_value_heads", cfg["num_attention_heads"]),
             vocab=cfg["vocab_size"], rope_theta=cfg.get("rope_theta", 10000.0), eps=cfg["rms_norm_eps"])
    m = tb.Llama(c)
    sd = {}
    for k, v in w.items():
        if k == "lm_head.weight":
            continue
        sd[k[len("model."):] if k.startswith("model.") else k] = v
    missing, unexpected = m.load_state_dict(sd, strict=False)
    if "lm_head.weight" in w:
        m.lm_head = torch.nn.Linear(c["hidden"], c["vocab"], bias=False)
        m.lm_head.weight.data = w["lm_head.weight"]
    bad = [k for k in missing if k != "lm_head.weight"]
    if bad or unexpected:
        sys.exit(f"state dict mismatch: missing {bad} unexpected {unexpected}")
    return m.eval()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("base"); ap.add_argument("adapter"); ap.add_argument("merged")
    ap.add_argument("--weight", type=float, default=1.0)
    ap.add_argument("--anchors", default=os.path.join(os.environ.get("LORAKIT_SHARED", "/work/shared"), "anchors", "scripts"))
    a = ap.parse_args()
    sys.path.insert(0, a.anchors)
    import torch_bench as tb

    cfg = json.load(open(os.path.join(a.base, "config.json")))
    acfg = json.load(open(os.path.join(a.adapter, "adapter_config.json")))
    base_w, merged_w = read_folder(a.base), read_folder(a.merged)
    ad = read_safetensors(os.path.join(a.adapter, "adapter_model.safetensors"))
    r0, alpha0, rs = acfg["r"], acfg["lora_alpha"], acfg.get("use_rslora", False)
    rp, ap_ = acfg.get("rank_pattern") or {}, acfg.get("alpha_pattern") or {}

    base = build(tb, cfg, base_w)
    adapted = build(tb, cfg, base_w)
    max_w = 0.0
    n_mod = 0
    for k in sorted(ad):
        if not k.endswith(".lora_A.weight"):
            continue
        module = k[len("base_model.model."):-len(".lora_A.weight")]
        A, B = ad[k], ad[k.replace("lora_A", "lora_B")]
        r = rp.get(pattern_key(rp.keys(), module), r0)
        alpha = ap_.get(pattern_key(ap_.keys(), module), alpha0)
        assert A.shape[0] == r, (module, A.shape, r)
        s = alpha / math.sqrt(r) if rs else alpha / r
        # weight level: W' - W == w*s*B@A (f32)
        d = merged_w[module + ".weight"] - base_w[module + ".weight"]
        max_w = max(max_w, (d - a.weight * s * (B @ A)).abs().max().item())
        # unmerged LoRA on the adapted model (PEFT forward: base(x) + lora_B(lora_A(x)) * scaling)
        parent = adapted
        path = module[len("model."):].split(".")
        for p in path[:-1]:
            parent = getattr(parent, p)
        lin = getattr(parent, path[-1])
        ll = tb.LoraLinear(lin, r=r, alpha=alpha)
        ll.lora_A.weight.data, ll.lora_B.weight.data = A.clone(), B.clone()
        ll.scaling = a.weight * s
        setattr(parent, path[-1], ll)
        n_mod += 1
    merged = build(tb, cfg, merged_w)
    ids = torch.tensor([[1, 403, 261, 307, 20, 7, 99, 300, 45, 12, 5]]) % cfg["vocab_size"]
    with torch.no_grad():
        lb, la, lm = base(ids), adapted(ids), merged(ids)
    print(json.dumps({"modules": n_mod, "max_abs_weight_err": max_w,
                      "adapter_effect": (la - lb).abs().max().item(),
                      "max_abs_logit_diff_merged_vs_unmerged": (la - lm).abs().max().item(),
                      "max_abs_logit": la.abs().max().item()}))


if __name__ == "__main__":
    main()
