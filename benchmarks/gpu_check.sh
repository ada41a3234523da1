#!/usr/bin/env bash
# A GPU session's checks in one go: the real-size pipeline end to end (train.py -> evaluate.py ->
# segment.py with ResNet-50 + SAM ViT-H at 512², random weights, on PASCAL files fabricated in the
# real on-disk formats, scaled up to VOC's image size), the same on SAM 2 ($SAM2) and the ViT-H run
# segmenting on MobileSAM, then the speed benchmarks of docs/speed.md.
#
#   bash benchmarks/gpu_check.sh OUT_DIR              # on a CUDA machine
#   SAM=vit_b DEVICE=cpu QUICK=1 bash benchmarks/gpu_check.sh /tmp/check   # the same path on a CPU
#   SAM2=sam2.1_hiera_b+ bash benchmarks/gpu_check.sh OUT_DIR             # another SAM 2 (default: 2.1 Hiera-L)
#
# Each step has its own time limit, so one that hangs cannot eat the others; logs go to OUT_DIR.
set -uo pipefail
out=$(realpath -m "${1:?usage: gpu_check.sh OUT_DIR}")
sam=${SAM:-vit_h}
sam2=${SAM2:-sam2.1_hiera_l}
device=${DEVICE:-cuda}
quick=${QUICK:-0}
mkdir -p "$out"
work=$(mktemp -d)
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."

step() {  # step NAME SECONDS COMMAND...: run, log to OUT_DIR/NAME.log, report time and status
    local name=$1 limit=$2; shift 2
    local start=$SECONDS
    timeout "$limit" "$@" >"$out/$name.log" 2>&1
    local rc=$?
    echo "== $name: rc $rc, $((SECONDS - start)) s" | tee -a "$out/summary.txt"
    tr "\r" "\n" <"$out/$name.log" | tail -n 25  # tqdm redraws with \r
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  python -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.cuda.is_available())"
} | tee "$out/summary.txt"

# Fabricated PASCAL (JPEGs, palette PNGs with 255 borders, val.txt) and a random SAM checkpoint
# under its official file name, so train.py, evaluate.py and segment.py take their real routes.
step fabricate 150 python -c "
import sys, torch
sys.path.insert(0, 'tests')
from pathlib import Path
from test_data import make_pascal
import model
from PIL import Image
voc = Path('$work/data/VOC2012')
make_pascal(voc.parent, train=40, val=40)
for path in [*voc.glob('JPEGImages/*.jpg'), *voc.glob('SegmentationClassAug/*.png')]:  # to VOC's size, ~400x330
    image = Image.open(path)
    resample = Image.NEAREST if path.suffix == '.png' else Image.BILINEAR
    image.resize((image.width * 9, image.height * 9), resample).save(path)  # keeps the palette
torch.save(model.build_sam('$sam').state_dict(), '$work/sam.pth')
torch.save({'model': model.build_sam('$sam2').state_dict()}, '$work/sam2.pt')  # as SAM 2's official files
torch.save(model.build_sam('vit_t').state_dict(), '$work/mobile_sam.pt')
print('fabricated', '$work')
"

if [ "$quick" = 1 ]; then epochs=1; steps=2; batch=2; val=4; episodes=8; else epochs=2; steps=20; batch=8; val=40; episodes=200; fi
common=(--dataset pascal --data-root "$work/data" --sam "$sam" --sam-checkpoint "$work/sam.pth" --device "$device" --cache-dir "$work/cache")
step train 180 python train.py "${common[@]}" --fold 0 --backbone-weights random --epochs $epochs \
    --steps-per-epoch $steps --batch-size $batch --val-episodes $val --out "$work/runs/fold0"
step evaluate 180 python evaluate.py "${common[@]}" --runs "$work/runs" --folds 0 --episodes $episodes --shots 1,5
voc=$work/data/VOC2012
step segment 100 python segment.py --checkpoint "$work/runs/fold0/best.pt" --sam-checkpoint "$work/sam.pth" \
    --device "$device" --reference "$voc/JPEGImages/2008_val000.jpg" --mask "$voc/SegmentationClassAug/2008_val000.png" \
    --class-id 1 --targets "$voc"/JPEGImages/2008_val00[1-9].jpg --out "$work/segment"
ls "$work/segment" | head -3

# SAM 2 through the same route, and the first run on MobileSAM (its decoder is ViT-H's: --sam vit_t).
common2=(--dataset pascal --data-root "$work/data" --sam "$sam2" --sam-checkpoint "$work/sam2.pt" --device "$device" --cache-dir "$work/cache")
step train_sam2 180 python train.py "${common2[@]}" --fold 0 --backbone-weights random --epochs $epochs \
    --steps-per-epoch $steps --batch-size $batch --val-episodes $val --out "$work/runs-sam2/fold0"
step evaluate_sam2 180 python evaluate.py "${common2[@]}" --runs "$work/runs-sam2" --folds 0 --episodes $episodes --shots 1,5
step segment_sam2 100 python segment.py --checkpoint "$work/runs-sam2/fold0/best.pt" --device "$device" \
    --reference "$voc/JPEGImages/2008_val000.jpg" --mask "$voc/SegmentationClassAug/2008_val000.png" \
    --class-id 1 --targets "$voc"/JPEGImages/2008_val00[1-9].jpg --out "$work/segment-sam2"
if [ "$sam" = vit_h ]; then
    step segment_mobile_sam 100 python segment.py --checkpoint "$work/runs/fold0/best.pt" --sam vit_t \
        --sam-checkpoint "$work/mobile_sam.pt" --device "$device" --reference "$voc/JPEGImages/2008_val000.jpg" \
        --mask "$voc/SegmentationClassAug/2008_val000.png" --class-id 1 --targets "$voc"/JPEGImages/2008_val00[1-9].jpg \
        --out "$work/segment-mobile-sam"
fi

[ "$quick" = 1 ] && { echo "quick: benchmarks skipped"; rm -rf "$work"; exit 0; }
step synthetic_epoch 120 python train.py --dataset synthetic --device "$device" --epochs 1 --out "$work/synthetic" \
    --cache-dir "$work/cache-synthetic"   # one epoch of the main job: is the tiny config worth a GPU?
step bench_model 120 python benchmarks/bench_model.py --steps 10
step bench_pipeline 120 python benchmarks/bench_pipeline.py --real --sam "$sam" --batches 5
step bench_segment 120 python benchmarks/bench_segment.py --real --sam "$sam" --targets 32
step bench_video 120 python benchmarks/bench_video.py --real --device "$device"
step bench_sams 600 python benchmarks/bench_sams.py --all --device "$device"   # every SAM, one table
rm -rf "$work"
