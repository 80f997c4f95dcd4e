#!/bin/sh
# Regenerate the simulator's sample assets (run from anywhere; needs ffmpeg with libx264
# and a Python with Pillow, e.g. PYTHON=.venv/bin/python sh make_assets.sh).
#
#   sample.mp4       1.5 s, 128x72, 12 fps, H.264 baseline, yuv420p, faststart, no audio
#   thumbnail.webp   the first frame, 128x72, lossless WebP
#   spritesheet.webp 6 frames (every 0.25 s) laid out 3 across, 2 down: 384x144 WebP
#
# The bitexact flags keep the output free of encoder version strings and timestamps.
set -eu
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"
frames="$(mktemp -d)"
trap 'rm -rf "$frames"' EXIT

ffmpeg -hide_banner -loglevel error -y \
    -f lavfi -i "testsrc2=size=128x72:rate=12:duration=1.5" \
    -c:v libx264 -profile:v baseline -level 3.0 -pix_fmt yuv420p -preset veryslow -crf 32 \
    -movflags +faststart -map_metadata -1 -fflags +bitexact -flags:v +bitexact \
    sample.mp4

ffmpeg -hide_banner -loglevel error -y -i sample.mp4 -vf fps=4 "$frames/frame_%02d.png"

"$PYTHON" - "$frames" <<'PY'
import pathlib
import sys

from PIL import Image

frames = sorted(pathlib.Path(sys.argv[1]).glob("frame_*.png"))[:6]
images = [Image.open(p).convert("RGB") for p in frames]
width, height = images[0].size
images[0].save("thumbnail.webp", "WEBP", lossless=True)
sheet = Image.new("RGB", (width * 3, height * 2))
for index, image in enumerate(images):
    sheet.paste(image, ((index % 3) * width, (index // 3) * height))
sheet.save("spritesheet.webp", "WEBP", quality=80)
PY
