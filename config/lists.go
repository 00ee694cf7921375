package config

import (
	"fmt"
	"strings"
)

// listKind describes a key whose value is a list of items, each a mapping
// of a few scalar fields: log.replicas and quota.directories. In YAML an
// item is a mapping; in the environment and the flags the list is the text
// A:B:C[,A:B:C...], fields in the order of fields. Only the first field may
// hold colons (the others are split off at the last colons), so it is the
// one for a path.
type listKind struct {
	item    string // one item, for messages: "replica"
	example string // one item in the text syntax
	fields  []itemField
	// fromDefaults says that fields an item leaves out take the values of
	// the first item of the built-in defaults, which must give them all.
	// Otherwise an item leaves out only the fields with a default.
	fromDefaults bool
	// set stores the parsed items (field name -> parsed value, every field
	// present) in the Config.
	set func(c *Config, items []map[string]any)
	// scalars renders each item of the Config's list: per field, in the
	// order of fields, the text and the YAML tag.
	scalars func(c *Config) [][][2]string
}

// itemField is one key inside an item of a list.
type itemField struct {
	name  string
	path  bool   // YAML null means ""
	def   string // text of the value when left out; "" = required (unless fromDefaults)
	parse func(string) (any, error)
}

// names lists the fields' names.
func (l *listKind) names() []string {
	n := make([]string, len(l.fields))
	for i, f := range l.fields {
		n[i] = f.name
	}
	return n
}

// syntax is the text syntax of an item: PATH:TYPE:SIZE.
func (l *listKind) syntax() string {
	return strings.ToUpper(strings.Join(l.names(), ":"))
}

// required lists the fields an item must give, for messages.
func (l *listKind) required() []string {
	var r []string
	for _, f := range l.fields {
		if l.fromDefaults || f.def == "" {
			r = append(r, f.name)
		}
	}
	return r
}

// typedField is an itemField of items of type T.
type typedField[T any] struct {
	itemField
	set    func(*T, any)
	scalar func(T) (string, string)
}

// newList builds a listKind over the list of T that field points to.
func newList[T any](item, example string, fromDefaults bool, fields []typedField[T], field func(*Config) *[]T) *listKind {
	l := &listKind{item: item, example: example, fromDefaults: fromDefaults}
	for _, f := range fields {
		l.fields = append(l.fields, f.itemField)
	}
	l.set = func(c *Config, items []map[string]any) {
		out := make([]T, len(items))
		for i, m := range items {
			for _, f := range fields {
				if v, ok := m[f.name]; ok {
					f.set(&out[i], v)
				}
			}
		}
		*field(c) = out
	}
	l.scalars = func(c *Config) [][][2]string {
		var out [][][2]string
		for _, it := range *field(c) {
			var row [][2]string
			for _, f := range fields {
				v, tag := f.scalar(it)
				row = append(row, [2]string{v, tag})
			}
			out = append(out, row)
		}
		return out
	}
	return l
}

// parseListText parses the text syntax of list key name. An empty string
// is an empty list. It returns each item's parsed fields.
func parseListText(name string, l *listKind, s, origin string, ps *problems) ([]map[string]any, bool) {
	if strings.TrimSpace(s) == "" {
		return []map[string]any{}, true
	}
	n := len(l.fields)
	var items []map[string]any
	ok := true
	for i, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		iname := fmt.Sprintf("%s[%d]", name, i)
		texts := make([]string, n)
		rest := item
		good := true
		for j := n - 1; j > 0; j-- {
			var found bool
			rest, texts[j], found = cutLast(rest, ":")
			if !found {
				good = false
				break
			}
		}
		texts[0] = rest
		if !good {
			ps.add(origin, iname, "%q is not %s (e.g. %s)", item, l.syntax(), l.example)
			ok = false
			continue
		}
		m := map[string]any{}
		for j, text := range texts {
			v, err := l.fields[j].parse(text)
			if err != nil {
				ps.add(origin, iname+"."+l.fields[j].name, "%v", err)
				ok = false
				continue
			}
			m[l.fields[j].name] = v
		}
		items = append(items, m)
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
