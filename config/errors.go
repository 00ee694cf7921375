package config

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Problem is one thing wrong with the configuration.
type Problem struct {
	// Origin is where the offending value came from: "FILE:LINE",
	// "$DCACHE_CACHE_SIZE", "--cache.size", "built-in defaults:LINE"; ""
	// when it came from nowhere (a key no source sets).
	Origin string
	// Key is the dotted key, with list indexes ("log.replicas[1].type");
	// "" when the problem is not about one key (a file that cannot be read).
	Key string
	// Reason says what is wrong and, where it helps, what would be right.
	Reason string
}

func (p *Problem) Error() string {
	var parts []string
	for _, s := range []string{p.Origin, p.Key, p.Reason} {
		if s != "" {
			parts = append(parts, s)
		}
	}
	return strings.Join(parts, ": ")
}

// Error is what Load returns when the configuration is invalid. It lists
// every problem found, so that the user can fix them all in one go.
type Error struct {
	Problems []*Problem
}

func (e *Error) Error() string {
	if len(e.Problems) == 1 {
		return "config: " + e.Problems[0].Error()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "config: %d problems:", len(e.Problems))
	for _, p := range e.Problems {
		b.WriteString("\n  ")
		b.WriteString(p.Error())
	}
	return b.String()
}

// Unwrap gives errors.As access to each *Problem.
func (e *Error) Unwrap() []error {
	errs := make([]error, len(e.Problems))
	for i, p := range e.Problems {
		errs[i] = p
	}
	return errs
}

// IsValidation reports whether err (or an error it wraps) is a problem with
// the user's configuration, as opposed to a failure of the machine; main
// exits with status 2 on these.
func IsValidation(err error) bool {
	var e *Error
	return errors.As(err, &e)
}

// problems collects Problems in the order they are found.
type problems []*Problem

func (ps *problems) add(origin, key, format string, args ...any) {
	*ps = append(*ps, &Problem{Origin: origin, Key: key, Reason: fmt.Sprintf(format, args...)})
}

func (ps problems) err() error {
	if len(ps) == 0 {
		return nil
	}
	return &Error{Problems: ps}
}

// didYouMean returns ` (did you mean "X"?)` for the candidate closest to
// name, or "" when none is close enough to be a likely typo.
func didYouMean(name string, candidates []string) string {
	best, bestDist := "", -1
	for _, c := range candidates {
		d := editDistance(strings.ToLower(name), strings.ToLower(c))
		if bestDist < 0 || d < bestDist {
			best, bestDist = c, d
		}
	}
	// Allow one edit in short names and two in longer ones; more than that
	// suggests something unrelated.
	limit := 1
	if len(name) >= 6 {
		limit = 2
	}
	if bestDist < 0 || bestDist > limit {
		return ""
	}
	return " (did you mean " + strconv.Quote(best) + "?)"
}

// editDistance is the optimal string alignment distance: insertions,
// deletions, substitutions and transpositions of adjacent bytes count 1.
func editDistance(a, b string) int {
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}
