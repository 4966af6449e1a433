#!/usr/bin/env python3
"""Enrichment on screens it has never seen: renders N console screens (login banner, prompt,
`grep From:` output with random e-mail addresses) in xterm on a private Xvfb with a random
monospace font, size and colour scheme, captures the root window (ImageMagick `import`), runs
`overlord images analyze` on them and prints per screen: CER (the fixture README's formula),
e-mails missed / extra, and the login_prompt/terminal tags; then the totals.

    cargo build -p overlord-cli
    python3 scripts/enrich_unseen_sweep.py [--seed 1] [--n 10] [--overlord target/debug/overlord]

Needs xvfb, xterm, imagemagick (scripts/install-deps.sh). Only local X servers are used.
"""
import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time

FONTS = ["DejaVu Sans Mono", "Noto Sans Mono", "Nimbus Mono PS", "Noto Mono"]
SCHEMES = [("black", "white"), ("white", "black"), ("green", "black"), ("#d0d0d0", "#300a24"),
           ("#eeeeee", "#1e1e1e"), ("#000080", "#ffffcc"), ("#cccccc", "#2b2b2b")]
USERS = ["alice.smith", "bob_jones", "c.white", "ops-team", "noreply", "j.doe", "admin",
         "m.rossi", "sec+alerts", "helpdesk"]
DOMAINS = ["example-corp.com", "mail.example.org", "alerts.example.net", "corp.example.co.uk",
           "ufficio.example.it", "mx1.example.io", "example.de"]


def lev(a, b):
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def render(path, font, size, fg, bg, text_file):
    display = 200 + random.randrange(300)
    xvfb = subprocess.Popen(["Xvfb", f":{display}", "-screen", "0", "1024x768x24",
                             "-nolisten", "tcp"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.7)
        env = dict(os.environ, DISPLAY=f":{display}")
        term = subprocess.Popen(["xterm", "-geometry", "90x20+40+60", "-fa", font, "-fs",
                                 str(size), "-fg", fg, "-bg", bg, "-e", "sh", "-c",
                                 f"cat '{text_file}'; sleep 30"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(2.5)
        subprocess.run(["import", "-display", f":{display}", "-window", "root", path],
                       check=True)
        term.kill()
    finally:
        xvfb.kill()
        xvfb.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--overlord", default="target/debug/overlord")
    a = ap.parse_args()
    random.seed(a.seed)
    tmp = tempfile.mkdtemp(prefix="overlord-sweep-")
    truth = {}
    for i in range(a.n):
        font, size = random.choice(FONTS), random.choice([10, 11, 12, 13, 14, 16])
        fg, bg = random.choice(SCHEMES)
        emails = [f"{random.choice(USERS)}@{random.choice(DOMAINS)}"
                  for _ in range(random.randint(1, 3))]
        host = random.choice(["web01", "db02", "mail3", "fs-7"])
        lines = [f"Debian GNU/Linux 12 {host} tty1", "", f"{host} login: root", "Password:",
                 "$ grep -h '^From:' /var/mail/* | sort | uniq -c"]
        lines += [f"      {random.randint(1, 9)} From: {e}" for e in emails] + ["$ "]
        txt = os.path.join(tmp, f"{i}.txt")
        with open(txt, "w") as f:
            f.write("\n".join(lines) + "\n")
        png = os.path.join(tmp, f"screen_{i}.png")
        render(png, font, size, fg, bg, txt)
        truth[png] = (emails, "\n".join(lines), f"{font} {size} {fg}/{bg}")
    out = subprocess.run([a.overlord, "images", "analyze", *truth], capture_output=True,
                         text=True, env=dict(os.environ, OMP_THREAD_LIMIT="1")).stdout
    found = total = 0
    cers = []
    for line in out.splitlines():
        d = json.loads(line)
        emails, text, desc = truth[d["file"]]

        def norm(s):
            return " ".join(s.split())
        cer = lev(norm(d.get("text", "")), norm(text)) / len(norm(text))
        cers.append(cer)
        want = {e.lower() for e in emails}
        got = {e.lower() for e in d.get("emails", [])}
        found += len(want & got)
        total += len(want)
        tags = d.get("tags", [])
        note = "" if want == got else f" missed {sorted(want - got)} extra {sorted(got - want)}"
        if not {"login_prompt", "terminal"} <= set(tags):
            note += f" tags {tags}"
        print(f"{os.path.basename(d['file'])} {desc:40} CER {cer:.3f}{note}")
    print(f"e-mails exact {found}/{total}, mean CER {sum(cers) / max(len(cers), 1):.3f} "
          f"over {len(cers)} screens ({tmp})")


if __name__ == "__main__":
    sys.exit(main())
