package config

import (
	"fmt"
	"math/big"
	"strconv"
	"strings"
)

// Size is a number of bytes. In configuration text it is written as an
// integer (bytes) or as a number with a unit: B, KiB, MiB, GiB, TiB (binary),
// KB, MB, GB, TB (decimal), or K, M, G, T (binary). A fraction is accepted
// when the result is a whole number of bytes ("1.5GiB"), nothing else is
// ("1 GB", "1gb", "-1", "1e9").
type Size int64

// Binary size units.
const (
	KiB Size = 1 << 10
	MiB Size = 1 << 20
	GiB Size = 1 << 30
	TiB Size = 1 << 40
)

// sizeUnit returns the multiplier of a unit suffix, and whether the
// suffix is one.
func sizeUnit(unit string) (int64, bool) {
	switch unit {
	case "", "B":
		return 1, true
	case "K", "KiB":
		return 1 << 10, true
	case "M", "MiB":
		return 1 << 20, true
	case "G", "GiB":
		return 1 << 30, true
	case "T", "TiB":
		return 1 << 40, true
	case "KB":
		return 1e3, true
	case "MB":
		return 1e6, true
	case "GB":
		return 1e9, true
	case "TB":
		return 1e12, true
	}
	return 0, false
}

// ParseSize parses a size as described on Size.
func ParseSize(s string) (Size, error) {
	n, err := parseSize(s)
	if err != nil {
		return 0, fmt.Errorf("config: %w", err)
	}
	return n, nil
}

// parseSize is ParseSize with errors that carry no package prefix, so that
// they read well after a key name.
func parseSize(s string) (Size, error) {
	bad := func() error { return fmt.Errorf("%q is not a size (use e.g. 512MiB, 1GiB)", s) }
	i := 0
	for i < len(s) && (s[i] >= '0' && s[i] <= '9' || s[i] == '.') {
		i++
	}
	num, unit := s[:i], s[i:]
	mult, ok := sizeUnit(unit)
	if !ok {
		return 0, bad()
	}
	whole, frac, _ := strings.Cut(num, ".")
	if whole == "" || strings.HasSuffix(num, ".") || strings.Contains(frac, ".") {
		return 0, bad()
	}
	// Exact arithmetic: "1.5GiB" must be 1610612736 bytes, not a float's
	// approximation of it.
	n, ok := new(big.Int).SetString(whole+frac, 10)
	if !ok {
		return 0, bad()
	}
	n.Mul(n, big.NewInt(mult))
	den := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(len(frac))), nil)
	q, r := n.QuoRem(n, den, new(big.Int))
	if r.Sign() != 0 {
		return 0, fmt.Errorf("%q is not a whole number of bytes", s)
	}
	if !q.IsInt64() {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return Size(q.Int64()), nil
}

// String renders the size in the largest binary unit that divides it
// exactly ("1GiB", "1536MiB", "100B"); ParseSize reads it back unchanged.
func (s Size) String() string {
	if s != 0 {
		for _, u := range []struct {
			n    Size
			name string
		}{{TiB, "TiB"}, {GiB, "GiB"}, {MiB, "MiB"}, {KiB, "KiB"}} {
			if s%u.n == 0 {
				return strconv.FormatInt(int64(s/u.n), 10) + u.name
			}
		}
	}
	return strconv.FormatInt(int64(s), 10) + "B"
}

// MarshalText implements encoding.TextMarshaler.
func (s Size) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (s *Size) UnmarshalText(b []byte) error {
	n, err := ParseSize(string(b))
	if err != nil {
		return err
	}
	*s = n
	return nil
}
