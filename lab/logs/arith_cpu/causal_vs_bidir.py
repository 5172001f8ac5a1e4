import sys, time, numpy as np, torch
sys.path.insert(0, "/work/main/lab/gpu"); sys.argv = sys.argv[:1] + sys.argv[1:]
import arith_sweep as S
from layerwise import data as D, training as T
torch.set_num_threads(1)
mode = sys.argv[1]  # "bidir" or "causal"
docs = [d + "\n" + D.EOT for d in D.arithmetic_documents(20000, seed=0)]
tok = D.train_tokenizer(docs[:2000], 300)
flat = D.encode(tok, docs).astype(np.int64); L = 128
rows_np = flat[: len(flat) // L * L].reshape(-1, L); rows = torch.from_numpy(rows_np)
spans = torch.from_numpy(S.answer_spans(rows_np, tok))
p = T.get_preset("tiny", d_model=128, n_layers=4, n_heads=4, d_mlp=352)
model = T.init_model(p, tok, "ar" if mode == "causal" else "dlm")
opt = torch.optim.AdamW(model.parameters(), lr=2e-3, betas=(0.9, 0.95), weight_decay=0.1)
held = [h for h in D.arithmetic_heldout(400, seed=0) if h["kind"] != "word"][:128]
ctx = D.arithmetic_fewshot(2, 0); g = torch.Generator().manual_seed(0); rng = np.random.default_rng(0); t0 = time.time()
for s in range(1, 3001):
    pick = rng.integers(0, len(rows), 32)
    loss = S.diffusion_loss(model, rows[pick], tok.mask_token_id, g, False, "1/t", 1.0, spans[pick], 1.0)
    loss.backward(); torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0); opt.step(); opt.zero_grad()
    if s % 250 == 0:
        r = S.evaluate(model, tok, "dlm", held, ctx, torch.device("cpu"))
        print(mode, s, round(loss.item(), 3), r["exact"], r["first_digit"], r["last_digit"], r["distinct_answers"], int(time.time() - t0), flush=True)
