"""Recipe search (its numbers and notes: results/case-study/recipe-search/README.md): train configs/cifar10_tiny.yaml
with overrides for STEPS steps through ijepa.train, then k-NN (k = 20) of the target and the
context encoder's avg-pooled features on a fixed class-balanced subset of CIFAR-10
(10,000 train / 5,000 test). Run from the repository root after prep.py:

    OMP_NUM_THREADS=1 .venv/bin/python experiments/recipe-search/harness.py NAME '{"optimization.ema": [0.99, 0.999]}' 600

``_init`` in the overrides re-initialises the patch embedding ('xavier' as MAE does, 'default'
PyTorch's, 'stdX' trunc-normal of std X) instead of the official trunc-normal(0.02).

    .venv/bin/python experiments/recipe-search/harness.py --score CKPT [CKPT ...]

scores existing checkpoints of the CIFAR-10 recipe the same way, without training.
"""
import json, sys, time
import numpy as np, torch
torch.set_num_threads(1)
sys.path.insert(0, str(__import__('pathlib').Path(__file__).resolve().parents[2]))
from ijepa.config import load_config, config_from_dict
import ijepa.train as T
from jepa_eval.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from jepa_eval.protocols.knn import knn_evaluate, KNNConfig

recipe = load_config('configs/cifar10_tiny.yaml')  # what every variant overrides
data = np.load('.cache/recipe-search/cifar.npz')
def subset(x, y, per):
    idx = np.concatenate([np.where(y == c)[0][:per] for c in range(10)])
    return x[idx], y[idx]
xtr, ytr = subset(data['x_train'], data['y_train'], 1000)
xte, yte = subset(data['x_test'], data['y_test'], 500)
mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1); std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
def tens(x): return (torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255 - mean) / std
@torch.no_grad()
def feats(enc, x):
    enc.eval()
    return torch.cat([enc(tens(x[i:i + 500])).mean(1) for i in range(0, len(x), 500)]).numpy()
def knn(enc):
    from jepa_eval.protocols.rank import rankme
    a, b = feats(enc, xtr), feats(enc, xte)
    r = knn_evaluate(a, ytr, b, yte, KNNConfig(ks=(20,)))
    return [m.value for m in r if m.name == 'top1'][0], rankme(b)

from ijepa.checkpoint import strip_prefix
def score(m, ck):
    """(target-encoder k-NN, context-encoder k-NN, target RankMe) of checkpoint dict ck loaded into m."""
    m.target_encoder.load_state_dict(strip_prefix(ck['target_encoder']))
    acc, rk = knn(m.target_encoder)
    m.encoder.load_state_dict(strip_prefix(ck['encoder']))
    return acc, knn(m.encoder)[0], rk

if sys.argv[1] == '--score':
    model = T.build_model(recipe)
    for path in sys.argv[2:]:
        ck = torch.load(path, map_location='cpu', weights_only=False)
        acc, acc_ctx, rk = score(model, ck)
        print(json.dumps(dict(ckpt=path, steps=ck['itr'], knn20=acc, knn20_ctx=acc_ctx, rankme=rk)))
    sys.exit()

name = sys.argv[1]; over = json.loads(sys.argv[2]); steps = int(sys.argv[3])
init = over.pop('_init', 'official')
d = recipe.to_dict()
d['logging']['folder'] = f'.cache/recipe-search/runs/{name}'
d['data']['num_workers'] = 0
ipe = 100
d['run']['max_iters_per_epoch'] = ipe
d['optimization']['epochs'] = steps // ipe
d['run']['checkpoint_freq'] = 1000
for k, v in over.items():
    sec, key = k.split('.')
    d[sec][key] = v
cfg = config_from_dict(d)

orig = T.build_model
def build(cfg):
    m = orig(cfg)
    if init != 'official':
        pe = m.encoder.patch_embed.proj
        if init == 'xavier':
            torch.nn.init.xavier_uniform_(pe.weight.view(pe.weight.shape[0], -1))
        elif init == 'default':
            pe.reset_parameters()
        elif init.startswith('std'):
            torch.nn.init.trunc_normal_(pe.weight, std=float(init[3:]))
        torch.nn.init.zeros_(pe.bias)
        m.target_encoder.load_state_dict(m.encoder.state_dict())
    return m
T.build_model = build

t0 = time.time()
res = T.train(cfg, progress=False)
dt = time.time() - t0
acc, acc_ctx, rk = score(T.build_model(cfg), torch.load(res.latest, map_location='cpu', weights_only=False))
out = dict(name=name, over=over, init=init, steps=res.steps, train_s=round(dt), knn20=acc, knn20_ctx=acc_ctx, rankme=rk,
           loss_end=float(np.mean(res.losses[-50:])))
print(json.dumps(out)); open('.cache/recipe-search/results.jsonl', 'a').write(json.dumps(out) + '\n')
