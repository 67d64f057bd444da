# GPU smoke check of the training stack (run from the repo root after `pip install -e .`).
set -x
export PYTHONUNBUFFERED=1 ZOO_PLAIN_PROGRESS=1
nvidia-smi --query-gpu=name,memory.total --format=csv
python3 -c "import torch, lightning; print(torch.__version__, lightning.__version__, torch.cuda.is_available())"
timeout 90 python3 -m pytest -q -m gpu tests/test_relative_attention.py -p no:cacheprovider 2>&1 | tail -3
for p in 32-true bf16-mixed; do
  timeout 100 python3 -m zoo.train trainer=gpu precision=$p trainer.max_steps=300 trainer.val_check_interval=150 \
    data.batch_size=64 logger=csv samples.every_n_steps=0 samples.num_samples=1 run_dir=/tmp/gpu_runs/run_$p 2>&1 | grep -E "validation loss|Error|error" | head -5
  python3 - <<PY
import csv
rows = list(csv.DictReader(open("/tmp/gpu_runs/run_$p/csv/metrics.csv")))
tps = [float(r["tokens_per_s"]) for r in rows if r.get("tokens_per_s")]
val = [float(r["val/loss"]) for r in rows if r.get("val/loss")]
tps = sorted(tps[len(tps)//2:])
print("precision=$p median_tokens_per_s=%.0f final_val=%.4f" % (tps[len(tps)//2], val[-1]))
PY
done
