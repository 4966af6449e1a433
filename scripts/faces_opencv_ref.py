#!/usr/bin/env python3
"""OpenCV's reference faces for `face_parity`: for every PNG in DIR, cv2.CascadeClassifier
(haarcascade_frontalface_alt2, scaleFactor 1.1, minNeighbors 3, minSize 24, one thread) on
cvtColor(imread(colour), BGR2GRAY). Writes JSON {"opencv": version, "files": {name: {"faces":
[[x, y, w, h, neighbours], ...], "raw": [[x, y, w, h], ...]}}} (raw = the ungrouped window hits,
minNeighbors 0; --no-raw leaves them out).
usage: faces_opencv_ref.py DIR OUT.json [--no-raw] [--cascade PATH]"""
import json, os, sys
import cv2

args = [a for a in sys.argv[1:] if not a.startswith("--")]
cascade = "/usr/share/opencv4/haarcascades/haarcascade_frontalface_alt2.xml"
if "--cascade" in sys.argv:
    cascade = sys.argv[sys.argv.index("--cascade") + 1]
    args.remove(cascade)
d, out = args
cv2.setNumThreads(1)
cc = cv2.CascadeClassifier(cascade)
assert not cc.empty(), cascade
res = {}
for f in sorted(os.listdir(d)):
    if not f.lower().endswith((".png", ".jpg", ".jpeg")):
        continue
    g = cv2.cvtColor(cv2.imread(os.path.join(d, f), cv2.IMREAD_COLOR), cv2.COLOR_BGR2GRAY)
    boxes, n = cc.detectMultiScale2(g, scaleFactor=1.1, minNeighbors=3, minSize=(24, 24))
    e = {"faces": sorted([int(v) for v in b] + [int(k)] for b, k in zip(boxes, n))}
    if "--no-raw" not in sys.argv:
        raw = cc.detectMultiScale(g, scaleFactor=1.1, minNeighbors=0, minSize=(24, 24))
        e["raw"] = sorted([int(v) for v in b] for b in raw)
    res[f] = e
json.dump({"opencv": cv2.__version__, "cascade": os.path.basename(cascade), "files": res},
          open(out, "w"), separators=(",", ":"))
print(f"{len(res)} images, OpenCV {cv2.__version__} -> {out}")
