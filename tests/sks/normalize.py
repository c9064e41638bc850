# The spec's normalizer (shared/specs/sks.md §6.2), unchanged.
import re,sys
s=sys.stdin.read(); m={}
def rep(x, pfx):
    k=x.group(0)
    if k not in m: m[k]="<%s%d>"%(pfx, sum(1 for v in m.values() if v.startswith("<"+pfx))+1)
    return m[k]
s=re.sub(r'\b[0-9a-f]{128}\b', lambda x: rep(x,"KEY"), s)
s=re.sub(r'\b[0-9a-f]{40}\b', lambda x: rep(x,"TOK") if x.group(0)!="0"*40 else x.group(0), s)
s=re.sub(r'^Date: .*$', 'Date: <DATE>^M$', s, flags=re.M)
sys.stdout.write(s)
