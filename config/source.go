package config

import (
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
	// items holds, for each list key the source gives, the origin of each
	// field of each item, for validation messages.
	items map[string][]map[string]string
}

func newSource() *source {
	return &source{
		values:  map[string]any{},
		flags:   map[string]*pflag.Flag{},
		origins: map[string]string{},
		failed:  map[string]bool{},
		items:   map[string][]map[string]string{},
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
	if k.list != nil {
		items, ok := parseListText(k.name, k.list, text, origin, ps)
		if !ok {
			s.fail(k.name)
			return false
		}
		s.set(k.name, text, origin)
		s.items[k.name] = make([]map[string]string, len(items))
		for i := range items {
			o := map[string]string{}
			for _, f := range k.list.fields {
				o[f.name] = origin
			}
			s.items[k.name][i] = o
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

// parseReplicaText parses the text syntax of log.replicas,
// "PATH:TYPE:SIZE[,PATH:TYPE:SIZE...]". TYPE and SIZE are split off at the
// last two colons, so PATH may hold colons; PATH may be empty (the default
// location). Blanks around an item are ignored. An empty string is an
// empty list.
func parseReplicaText(s, origin string, ps *problems) ([]Replica, bool) {
	l := replicaList()
	items, ok := parseListText("log.replicas", l, s, origin, ps)
	var c Config
	l.set(&c, items)
	return c.Log.Replicas, ok
}
