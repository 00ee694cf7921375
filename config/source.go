package config

import (
	"fmt"
	"strings"
)

// layer holds the values that one source (the built-in defaults, the file,
// the environment, the flags) sets, already parsed.
type layer struct {
	values  map[string]any    // key name -> typed value
	origins map[string]string // key name -> where the value was given
	// failed marks keys the source gives but whose value is bad; merge
	// does not fall back to a lower source for them.
	failed map[string]bool
	// items holds, when the layer sets log.replicas, the origin of each
	// field of each item, for validation messages.
	items []map[string]string
}

func newLayer() *layer {
	return &layer{values: map[string]any{}, origins: map[string]string{}, failed: map[string]bool{}}
}

func (l *layer) set(name string, v any, origin string) {
	l.values[name] = v
	l.origins[name] = origin
	delete(l.failed, name)
}

func (l *layer) fail(name string) {
	delete(l.values, name)
	l.failed[name] = true
}

// setText parses text given for key k by a source that speaks text only
// (the environment, the flags) and records the value or the problem.
func (l *layer) setText(k *key, text, origin string, ps *problems) {
	if k.list {
		items, ok := parseReplicaText(text, origin, ps)
		if !ok {
			l.fail(k.name)
			return
		}
		l.set(k.name, items, origin)
		l.items = make([]map[string]string, len(items))
		for i := range items {
			l.items[i] = map[string]string{"path": origin, "type": origin, "size": origin}
		}
		return
	}
	v, err := k.parse(text)
	if err != nil {
		ps.add(origin, k.name, "%v", err)
		l.fail(k.name)
		return
	}
	l.set(k.name, v, origin)
}

// parseReplicaText parses "PATH:TYPE:SIZE[,PATH:TYPE:SIZE...]". TYPE and
// SIZE are split off at the last two colons, so PATH may hold colons; PATH
// may be empty (the default location). Blanks around an item are ignored.
// An empty string is an empty list.
func parseReplicaText(s, origin string, ps *problems) ([]Replica, bool) {
	if strings.TrimSpace(s) == "" {
		return []Replica{}, true
	}
	fields := replicaFields()
	var items []Replica
	ok := true
	for i, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		name := fmt.Sprintf("log.replicas[%d]", i)
		rest, size, ok1 := cutLast(item, ":")
		path, typ, ok2 := cutLast(rest, ":")
		if !ok1 || !ok2 {
			ps.add(origin, name, "%q is not PATH:TYPE:SIZE (e.g. /ssd1/dcache.log:ssd:4GiB)", item)
			ok = false
			continue
		}
		var r Replica
		for j, text := range []string{path, typ, size} {
			v, err := fields[j].parse(text)
			if err != nil {
				ps.add(origin, name+"."+fields[j].name, "%v", err)
				ok = false
				continue
			}
			fields[j].set(&r, v)
		}
		items = append(items, r)
	}
	return items, ok
}

// cutLast slices s around the last sep.
func cutLast(s, sep string) (before, after string, found bool) {
	if i := strings.LastIndex(s, sep); i >= 0 {
		return s[:i], s[i+len(sep):], true
	}
	return s, "", false
}
