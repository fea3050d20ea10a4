#!/usr/bin/env python3
"""Summary table for benches/authn.sh: authn_report.py OUT HASH_MS HASH_RPS WORKERS ELAPSED_S."""
import json
import os
import sys

out, hash_ms, hash_rps, workers, elapsed = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
backends = [b for b in ("sqlite", "postgres") if os.path.exists(f"{out}/{b}/results.json")]
R = {b: json.load(open(f"{out}/{b}/results.json")) for b in backends}


def f(x, d=1):
    return "-" if x is None else f"{x:.{d}f}"


def pm(ok):
    return "PASS" if ok else "MISS"


rows = [["#", "measure", "target", *[f"{b}" for b in backends], *[f"{b} result" for b in backends]]]
rows.append(["1", f"pool: hash bench --threads {workers}: hashes/s (1-thread ms/hash)", "-",
             *[f"{R[b]['hash_rps']:.1f} ({R[b]['hash_ms']:.2f} ms)" for b in backends], *["-" for _ in backends]])


def add(num, label, target, vals, oks=None):
    if all(v is None for v in vals):
        return  # a phase this run skipped (PHASES)
    oks = oks if oks is not None else [None for _ in backends]
    rows.append([num, label, target, *["-" if v is None else v for v in vals],
                 *["-" if o is None else pm(o) for o in oks]])


def col(fn):
    """fn over each backend's results; None where the run skipped that phase."""
    out = []
    for b in backends:
        try:
            out.append(fn(R[b]))
        except KeyError:
            out.append(None)
    return out


add("2", f"sign-ins/s at c=2x{workers} (200s only)", "-",
    col(lambda r: f"{r['throughput']['ok_per_s']:.1f}"))
add("2", "ratio sign-ins/s / hashes/s", ">= 0.90",
    col(lambda r: f"{r['throughput']['ratio']:.3f}"),
    col(lambda r: r["throughput"]["ratio"] >= 0.9 and r["throughput"]["non200"] == 0))
add("2", "non-200 / conn errors during throughput", "0",
    col(lambda r: f"{r['throughput']['non200']} / {sum(r['throughput']['errors'].values())}"),
    col(lambda r: r["throughput"]["non200"] == 0 and not r["throughput"]["errors"]))
add("2", "CPU % of one core: hash workers / rest of server / oha", "-",
    col(lambda r: f"{r['throughput']['cpu_pct']['hash']:.0f} / {r['throughput']['cpu_pct']['other']:.0f} / {r['throughput']['cpu_pct']['oha']:.0f}"))
add("3", f"overload c=8x{workers}: statuses", "only 200/429/503",
    col(lambda r: " ".join(f"{k}:{v}" for k, v in sorted(r["overload"]["codes"].items(), key=lambda kv: int(kv[0])))),
    col(lambda r: not r["overload"]["bad_codes"] and not r["overload"]["errors"]))
add("3", "503 latency p50 / p99 / max ms (n >= 20 ms; - = no 503)", "all < 20 ms",
    col(lambda r: f"{f(r['overload']['p50_503_ms'], 2)} / {f(r['overload']['p99_503_ms'], 2)} / "
                  f"{f(r['overload']['max_503_ms'], 2)} ({r['overload']['over20_503']})"),
    col(lambda r: r["overload"]["over20_503"] == 0))
add("3", "200 latency p99 ms (bound = (Q/W+1) x hash x 1.5)", "<= bound",
    col(lambda r: f"{f(r['overload']['p99_200_ms'])} (bound {r['overload']['p99_bound_ms']:.0f})"),
    col(lambda r: r["overload"]["p99_200_ms"] is not None and r["overload"]["p99_200_ms"] <= r["overload"]["p99_bound_ms"]))
add("3", "sign-ins/s under overload", "-", col(lambda r: f"{r['overload']['ok_per_s']:.1f}"))
add("3", "server VmHWM MiB after overload (bound 64 + W x m)", "<= bound",
    col(lambda r: f"{r['overload']['vmhwm_kib'] / 1024:.1f} (bound {r['overload']['rss_bound_kib'] / 1024:.1f})"),
    col(lambda r: r["overload"]["vmhwm_kib"] <= r["overload"]["rss_bound_kib"]))
add("4", "median ms unknown user / known user + wrong pw", "-",
    col(lambda r: f"{r['timing']['median_unknown_ms']:.2f} / {r['timing']['median_known_wrong_ms']:.2f}"))
add("4", "timing ratio unknown / known (all 401, verif. = requests)", "0.95 - 1.05",
    col(lambda r: f"{r['timing']['ratio']:.3f} ({'valid' if r['timing']['valid'] else 'INVALID'})"),
    col(lambda r: r["timing"]["valid"] and 0.95 <= r["timing"]["ratio"] <= 1.05))
add("5", "B median ms unloaded / under A's flood", "-",
    col(lambda r: f"{r['fairness']['b_unloaded_median_ms']:.1f} / {r['fairness']['b_flood_median_ms']:.1f}"))
add("5", "B flood/unloaded ratio (B all 200)", "<= 2.0",
    col(lambda r: f"{r['fairness']['ratio']:.2f}x"),
    col(lambda r: r["fairness"]["ratio"] <= 2.0 and r["fairness"]["b_all_ok"]))
add("5", f"A flood 503 latency p50 / p99 / max ms (n >= 20 ms)", "all < 20 ms",
    col(lambda r: f"{f(r['fairness']['a_503_p50_ms'], 2)} / {f(r['fairness']['a_503_p99_ms'], 2)} / "
                  f"{f(r['fairness']['a_503_max_ms'], 2)} ({r['fairness']['a_503_over20']})"),
    col(lambda r: r["fairness"]["a_503_over20"] == 0 and not r["fairness"]["a_bad_codes"]))
add("5", "A requests shed (503) / total", "-",
    col(lambda r: f"{r['fairness']['a_shed']} / {r['fairness']['a_total']}"))

w = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
line = lambda r: "| " + " | ".join(str(c).ljust(w[i]) for i, c in enumerate(r)) + " |"
md = "\n".join([line(rows[0]), "|" + "|".join("-" * (n + 2) for n in w) + "|", *map(line, rows[1:])])
busy = []
for b in backends:
    for ph, v in R[b]["idle"].items():
        busy.append(f"{b}/{ph}: {v['host_cpu_pct']:.0f}%{'' if v['quiet'] else ' (BUSY)'}")
md += "\n\nhost CPU (% of one core) in the second before each phase: " + ", ".join(busy)
md += f"\nrun time: {elapsed} s\n"
open(f"{out}/summary.md", "w").write(md)
print("\n" + md)
