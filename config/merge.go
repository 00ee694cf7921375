package config

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/viper"
)

var _ viper.FlagValue = textFlag{}

// layer puts the checked sources into a fresh viper instance, one per Load
// (viper's package-level instance is never used), each in the viper layer
// that gives the documented precedence, flag > env > file > default:
//
//	flags     viper's flag layer (BindFlagValue), for the flags that were set
//	env       viper's config layer, merged over the file (MergeConfigMap)
//	file      viper's config layer (MergeConfigMap)
//	defaults  viper's default layer (SetDefault)
//
// The environment cannot use viper's own environment layer: viper looks
// variables up with os.LookupEnv, in the process environment, whereas Load
// takes them as a slice. Merged over the file, they replace the file's
// values key by key, and the flags still come first.
func layer(defaults, file, env, flags *source) (*viper.Viper, error) {
	v := viper.New()
	for name, raw := range defaults.values {
		v.SetDefault(name, raw)
	}
	for _, s := range []*source{file, env} {
		if err := v.MergeConfigMap(nest(s.values)); err != nil {
			return nil, fmt.Errorf("config: merge settings: %w", err)
		}
	}
	for name, f := range flags.flags {
		if err := v.BindFlagValue(name, textFlag{f}); err != nil {
			return nil, fmt.Errorf("config: bind flag --%s: %w", f.Name, err)
		}
	}
	return v, nil
}

// nest turns values by dotted key into the nested mappings of a YAML
// document, as viper's config layer holds them.
func nest(values map[string]any) map[string]any {
	root := map[string]any{}
	for name, raw := range values {
		m := root
		parts := strings.Split(name, ".")
		for _, p := range parts[:len(parts)-1] {
			child, ok := m[p].(map[string]any)
			if !ok {
				child = map[string]any{}
				m[p] = child
			}
			m = child
		}
		m[parts[len(parts)-1]] = raw
	}
	return root
}

// merged says, for the effective value of each key, where it came from and
// whether it is usable.
type merged struct {
	origins map[string]string
	items   map[string][]map[string]string // list key -> origins of the fields of each item
	// broken marks keys whose effective source gave a bad value (already
	// reported), or that no source sets.
	broken map[string]bool
}

// decode builds the Config from viper's merged settings: the raw value of
// every key (v.Get) is checked against the schema and parsed by the key's
// own parser, so that a value of the wrong type is reported rather than
// zeroed, as viper's mapstructure decoding would. sources, lowest
// precedence first and starting with the built-in defaults, tell where
// each effective value came from: viper cannot say.
func decode(v *viper.Viper, keys []key, sources []*source, ps *problems) (*Config, merged) {
	c := &Config{}
	m := merged{origins: map[string]string{}, items: map[string][]map[string]string{}, broken: map[string]bool{}}
	for i := range keys {
		k := &keys[i]
		s := effective(sources, k.name)
		switch {
		case s == nil:
			ps.add("", k.name, "no value: the built-in defaults lack this key")
			m.broken[k.name] = true
			continue
		case s.failed[k.name]:
			m.broken[k.name] = true
			continue
		}
		origin := s.origins[k.name]
		m.origins[k.name] = origin
		raw := v.Get(k.name)
		if k.list != nil {
			m.items[k.name] = s.items[k.name]
			var itemDefault map[string]any
			if k.list.fromDefaults {
				itemDefault = firstItem(sources[0], k)
			}
			items, ok := decodeList(k, raw, origin, s.items[k.name], itemDefault, ps)
			if !ok {
				m.broken[k.name] = true
				continue
			}
			k.list.set(c, items)
			continue
		}
		val, err := decodeScalar(raw, k.path, k.parse)
		if err != nil {
			ps.add(origin, k.name, "%v", err)
			m.broken[k.name] = true
			continue
		}
		k.set(c, val)
	}
	return c, m
}

// effective returns the source of highest precedence that gives key name,
// well or badly, or nil when none does.
func effective(sources []*source, name string) *source {
	for i := len(sources) - 1; i >= 0; i-- {
		s := sources[i]
		if _, ok := s.origins[name]; ok || s.failed[name] {
			return s
		}
	}
	return nil
}

// firstItem returns the parsed fields of the first item of list key k in
// the built-in defaults, which fills the fields an item elsewhere leaves
// out; nil when the defaults have none (or a bad one, already reported).
func firstItem(defaults *source, k *key) map[string]any {
	raw, ok := defaults.values[k.name]
	if !ok {
		return nil
	}
	var ps problems
	items, good := decodeList(k, raw, "", nil, nil, &ps)
	if !good || len(items) == 0 {
		return nil
	}
	return items[0]
}

// decodeScalar parses the raw value of a plain key. The sources hand viper
// text, but the check does not rely on it: a number or a bool is read as its
// text and parsed like any other, and a mapping, a list or nothing is a
// problem, never a zero value.
func decodeScalar(raw any, path bool, parse func(string) (any, error)) (any, error) {
	switch x := raw.(type) {
	case string:
		return parse(x)
	case bool:
		return parse(strconv.FormatBool(x))
	case int:
		return parse(strconv.Itoa(x))
	case int64:
		return parse(strconv.FormatInt(x, 10))
	case float64:
		return parse(strconv.FormatFloat(x, 'g', -1, 64))
	case nil:
		if path {
			return parse("")
		}
		return nil, fmt.Errorf("no value given")
	}
	return nil, fmt.Errorf("expected a single value, found %s", describeRaw(raw))
}

// decodeList parses the raw value of list key k: the text A:B:C,... of
// the environment and the flags, or the list of mappings of YAML. Fields an
// item leaves out are taken from itemDefault, or else from the field's
// default. items gives the origin of each field, where known; origin is
// used otherwise.
func decodeList(k *key, raw any, origin string, items []map[string]string, itemDefault map[string]any, ps *problems) ([]map[string]any, bool) {
	l := k.list
	var list []any
	switch x := raw.(type) {
	case string:
		return parseListText(k.name, l, x, origin, ps)
	case []any:
		list = x
	case nil:
		ps.add(origin, k.name, "no value given")
		return nil, false
	default:
		ps.add(origin, k.name, "expected a list of %ss, found %s", l.item, describeRaw(raw))
		return nil, false
	}
	at := func(i int, field string) string {
		if i < len(items) {
			if o, ok := items[i][field]; ok {
				return o
			}
		}
		return origin
	}
	names := l.names()
	out := []map[string]any{}
	ok := true
	for i, in := range list {
		item := fmt.Sprintf("%s[%d]", k.name, i)
		m, isMap := in.(map[string]any)
		if !isMap {
			ps.add(at(i, names[0]), item, "expected a mapping with keys %s, found %s", strings.Join(names, ", "), describeRaw(in))
			ok = false
			continue
		}
		for _, field := range slices.Sorted(maps.Keys(m)) {
			if !slices.Contains(names, field) {
				ps.add(at(i, field), item+"."+field, "unknown key%s", didYouMean(field, names))
				ok = false
			}
		}
		r := map[string]any{}
		for _, f := range l.fields {
			fraw, given := m[f.name]
			if !given {
				switch {
				case itemDefault != nil:
					r[f.name] = itemDefault[f.name]
				case !l.fromDefaults && f.def != "":
					v, _ := f.parse(f.def)
					r[f.name] = v
				default:
					ps.add(at(i, f.name), item+"."+f.name, "missing (each %s needs %s)", l.item, strings.Join(l.required(), ", "))
					ok = false
				}
				continue
			}
			v, err := decodeScalar(fraw, f.path, f.parse)
			if err != nil {
				ps.add(at(i, f.name), item+"."+f.name, "%v", err)
				ok = false
				continue
			}
			r[f.name] = v
		}
		out = append(out, r)
	}
	return out, ok
}

// describeRaw names the kind of a raw value for messages, as describe does
// for a YAML node.
func describeRaw(raw any) string {
	switch x := raw.(type) {
	case nil:
		return "nothing"
	case map[string]any, map[any]any:
		return "a mapping"
	case []any:
		return "a list"
	case string:
		return strconv.Quote(x)
	}
	return strconv.Quote(fmt.Sprint(raw))
}
