package config

import (
	"fmt"
	"strings"

	"github.com/spf13/pflag"
)

// source is what one place of settings (the built-in defaults, the file,
// the environment, the flags) gives, after the strict pass has checked it
// against the schema. Viper layers the raw values; the source keeps what
// viper cannot tell: where each value was written and whether it was good.
type source struct {
	// values holds the raw value of each key the source gives well, as
	// written: text, or for log.replicas in YAML a list of mappings of
	// text. These are what viper layers.
	values map[string]any
	// flags holds, for the flag source, the flag that gives each key;
	// viper reads the flags itself.
	flags   map[string]*pflag.Flag
	origins map[string]string // key name -> where the value was given
	// failed marks keys the source gives but whose value is bad (already
	// reported); the merged value of such a key is not checked again.
	failed map[string]bool
	// items holds, when the source gives log.replicas, the origin of each
	// field of each item, for validation messages.
	items []map[string]string
}

func newSource() *source {
	return &source{
		values:  map[string]any{},
		flags:   map[string]*pflag.Flag{},
		origins: map[string]string{},
		failed:  map[string]bool{},
	}
}

func (s *source) set(name string, raw any, origin string) {
	s.values[name] = raw
	s.origins[name] = origin
	delete(s.failed, name)
}

func (s *source) fail(name string) {
	delete(s.values, name)
	delete(s.flags, name)
	delete(s.origins, name)
	s.failed[name] = true
}

// checkText checks text given for key k by a source that speaks text only
// (the environment, the flags), and records the text or the problem.
func (s *source) checkText(k *key, text, origin string, ps *problems) bool {
	if k.list {
		items, ok := parseReplicaText(text, origin, ps)
		if !ok {
			s.fail(k.name)
			return false
		}
		s.set(k.name, text, origin)
		s.items = make([]map[string]string, len(items))
		for i := range items {
			s.items[i] = map[string]string{"path": origin, "type": origin, "size": origin}
		}
		return true
	}
	if _, err := k.parse(text); err != nil {
		ps.add(origin, k.name, "%v", err)
		s.fail(k.name)
		return false
	}
	s.set(k.name, text, origin)
	return true
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
