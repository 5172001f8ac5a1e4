"""CPU probe: does masked diffusion learn 2-digit arithmetic from a pure arithmetic stream, and how fast vs AR?"""
import sys, time, json, random, math
import numpy as np, torch
from layerwise import data as D, training as T
torch.set_num_threads(1)
obj = sys.argv[1]; steps = int(sys.argv[2]); variant = sys.argv[3] if len(sys.argv) > 3 else "base"
L, B = 128, 32
docs = [d + "\n" + D.EOT for d in D.arithmetic_documents(20000, seed=0)]
tok = D.train_tokenizer(docs[:2000], 300)
flat = D.encode(tok, docs).astype(np.int64)
rows = flat[: len(flat) // L * L].reshape(-1, L)
print(obj, variant, "rows", rows.shape, flush=True)
p = T.get_preset("tiny", d_model=128, n_layers=4, n_heads=4, d_mlp=352)
model = T.init_model(p, tok, "ar" if obj == "ar" else "dlm")
mask_id = tok.mask_token_id
opt = torch.optim.AdamW(model.parameters(), lr=float(sys.argv[4]) if len(sys.argv) > 4 else 2e-3, betas=(0.9, 0.95), weight_decay=0.1)
sched = torch.optim.lr_scheduler.LambdaLR(opt, T.wsd_lambda(steps, 50, 0.2, 0.1))
held = [p_ for p_ in D.arithmetic_heldout(300, seed=0) if p_["kind"] != "word"][:128]
ctx = D.arithmetic_fewshot(2, 0)
def evaluate():
    model.eval(); ok = 0
    with torch.no_grad():
        for h in held:
            pr = tok(ctx + h["prompt"], add_special_tokens=False)["input_ids"]
            ans = tok(" " + h["answer"], add_special_tokens=False)["input_ids"]
            if obj == "ar":
                ids = torch.tensor([pr + ans]); lg = model(input_ids=ids).logits[0]
                pred = lg[len(pr) - 1: len(pr) - 1 + len(ans)].argmax(-1).tolist()
            else:
                ids = torch.tensor([pr + [mask_id] * len(ans)]); lg = model(input_ids=ids).logits[0]
                pred = lg[len(pr):].argmax(-1).tolist()
            ok += pred == ans
    model.train(); return ok / len(held)
g = torch.Generator().manual_seed(0); rng = np.random.default_rng(0)
t0 = time.time()
for s in range(steps):
    ids = torch.from_numpy(rows[rng.integers(0, len(rows), B)])
    if obj == "ar":
        loss = T.ar_loss(model, ids)
    else:
        loss = T.diffusion_loss(model, ids, mask_id, 1e-3, g, shifted=False)
    loss.backward(); torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0); opt.step(); sched.step(); opt.zero_grad()
    if (s + 1) % 250 == 0 or s + 1 == steps:
        print(f"{obj} step {s+1} loss {loss.item():.3f} acc {evaluate():.3f} t {time.time()-t0:.0f}s", flush=True)
