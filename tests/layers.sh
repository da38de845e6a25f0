#!/bin/sh
# The house rule of STYLE.md 14, checked on src/: calls go down. A module
# (foo.c and foo.h) may include the headers of modules on its own floor or
# below, never above; and no modules depend on each other in a loop (a
# worker owns its relay room; a relay tells the worker it ended through the
# room's callback). Run by make check; prints every offending include.
set -eu
src="${srcdir:-.}/src"

# Floors, lowest first: the pure ground floor, then the event-driven rooms.
floors='
0 log
1 util
2 addr json proxyproto
3 breaker
4 config
5 state stats notify reject admin_page probe resolve plan
6 upstream pool
7 listener pipe state_file admit turnaway
8 relay
9 worker admin
10 daemon
11 main ctl
'

status=0
edges=$(mktemp)
trap 'rm -f "$edges"' EXIT

# Every include of a project header: "from to", by module name.
for f in "$src"/*.c "$src"/*.h; do
	from=$(basename "$f" | sed 's/\.[ch]$//')
	sed -n 's/^#include "\([a-z_]*\)\.h".*/\1/p' "$f" | while read -r to; do
		[ "$to" = "$from" ] || echo "$from $to"
	done
done | sort -u > "$edges"

# The floor of a module, or nothing if it has none.
floor_of() {
	echo "$floors" | awk -v m="$1" 'NF { for (i = 2; i <= NF; i++) if ($i == m) print $1 }'
}

for f in "$src"/*.c "$src"/*.h; do
	m=$(basename "$f" | sed 's/\.[ch]$//')
	if [ -z "$(floor_of "$m")" ]; then
		echo "layers: src/$m: on no floor; add it to tests/layers.sh"
		status=1
	fi
done

while read -r from to; do
	a=$(floor_of "$from")
	b=$(floor_of "$to")
	[ -n "$a" ] && [ -n "$b" ] || continue
	if [ "$b" -gt "$a" ]; then
		echo "layers: $from (floor $a) includes $to.h (floor $b): a call up; pass a callback instead"
		status=1
	fi
done < "$edges"

# Loops: a module that reaches itself.
loops=$(awk '
	{ adj[$1] = adj[$1] " " $2; nodes[$1]; nodes[$2] }
	function reach(from, to, seen,    n, i, next_, parts) {
		n = split(adj[from], parts, " ")
		for (i = 1; i <= n; i++) {
			next_ = parts[i]
			if (next_ == to) return 1
			if (next_ in seen) continue
			seen[next_]
			if (reach(next_, to, seen)) return 1
		}
		return 0
	}
	END {
		for (m in nodes) { delete seen; if (reach(m, m, seen)) print m }
	}' "$edges" | sort)
if [ -n "$loops" ]; then
	echo "layers: modules in an include loop:" $loops
	status=1
fi
[ "$status" -eq 0 ] && echo "layers: $(wc -l < "$edges") includes between $(ls "$src"/*.c | wc -l) sources, all downward"
exit "$status"
