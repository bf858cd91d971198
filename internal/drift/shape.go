// Package drift owns the shape of http responses: the JSON paths and types
// a response body has (Of), and how a new shape differs from the shapes
// learned before (Compare), naming the changes that break the fields a
// workflow's expressions read. The run state machine stores learned shapes
// and changes (internal/runs, respchecks.go); this package is pure.
package drift

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"slices"
	"sort"
	"strings"
)

// Shape maps the paths of a response below the step's output
// ("body.items[].name") to their JSON type: object, array, string,
// number, boolean or null. An array's elements share the path "<array>[]";
// an empty array has no element path.
type Shape map[string]string

// Bounds of a shape, so a huge response costs a bounded walk: deeper
// values and paths beyond MaxPaths are not learned.
const (
	MaxDepth = 12
	MaxPaths = 2000
)

// Of is the shape of a step's output body, its paths rooted at "body".
func Of(body any) Shape {
	s := Shape{}
	s.walk("body", body, 0)
	return s
}

func (s Shape) walk(path string, v any, depth int) {
	if len(s) >= MaxPaths {
		return
	}
	t := TypeOf(v)
	if prev, ok := s[path]; ok && prev != t {
		// Array elements of several types: null gives way to the other.
		if prev == "null" {
			s[path] = t
		} else if t != "null" {
			s[path] = "mixed"
		}
	} else if !ok {
		s[path] = t
	}
	if depth >= MaxDepth {
		return
	}
	switch v := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			s.walk(path+"."+k, v[k], depth+1)
		}
	case []any:
		for _, e := range v {
			s.walk(path+"[]", e, depth+1)
		}
	}
}

// TypeOf names the JSON type of a decoded value.
func TypeOf(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case map[string]any:
		return "object"
	case []any:
		return "array"
	case string:
		return "string"
	case bool:
		return "boolean"
	case json.Number, float64, float32, int, int64, int32, uint64:
		return "number"
	}
	return "unknown"
}

// Hash identifies a shape: the same paths with the same types hash alike.
func (s Shape) Hash() string {
	paths := make([]string, 0, len(s))
	for p := range s {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	h := sha256.New()
	for _, p := range paths {
		h.Write([]byte(p))
		h.Write([]byte{0})
		h.Write([]byte(s[p]))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Change kinds.
const (
	Added       = "added"
	Removed     = "removed"
	Retyped     = "retyped"
	Nullability = "nullability" // a field became null, or null became a value
)

// Change is one difference of a new shape from the learned ones.
type Change struct {
	Path     string `json:"path"`
	Kind     string `json:"kind"`
	From     string `json:"from,omitempty"`
	To       string `json:"to,omitempty"`
	Breaking bool   `json:"breaking,omitempty"`
}

// Compare lists how next differs from learned (the union of the shapes seen
// before), sorted by path. A change is Breaking when a path the workflow
// reads (reads, relative to the output: "body.subject") was removed or
// retyped, or lies under one that was. A path missing only because its
// array is empty in next is not removed.
func Compare(learned, next Shape, reads []string) []Change {
	var out []Change
	for p, t := range learned {
		nt, ok := next[p]
		switch {
		case !ok:
			if underEmptyArray(next, p) || underRemoved(learned, next, p) {
				continue
			}
			out = append(out, Change{Path: p, Kind: Removed, From: t})
		case nt == t || nt == "mixed" || t == "mixed":
		case nt == "null" || t == "null":
			out = append(out, Change{Path: p, Kind: Nullability, From: t, To: nt})
		default:
			out = append(out, Change{Path: p, Kind: Retyped, From: t, To: nt})
		}
	}
	for p, t := range next {
		if _, ok := learned[p]; !ok {
			out = append(out, Change{Path: p, Kind: Added, To: t})
		}
	}
	for i := range out {
		c := &out[i]
		if c.Kind != Removed && c.Kind != Retyped {
			continue
		}
		for _, r := range reads {
			if r == c.Path || strings.HasPrefix(r, c.Path+".") || strings.HasPrefix(r, c.Path+"[]") {
				c.Breaking = true
				break
			}
		}
	}
	slices.SortFunc(out, func(a, b Change) int { return strings.Compare(a.Path+" "+a.Kind, b.Path+" "+b.Kind) })
	return out
}

// Breaking returns the breaking changes, as Compare marked them.
func Breaking(changes []Change) []Change {
	var out []Change
	for _, c := range changes {
		if c.Breaking {
			out = append(out, c)
		}
	}
	return out
}

// Merge adds the paths of other to s (learning a new shape); a path whose
// types differ becomes "mixed".
func (s Shape) Merge(other Shape) {
	for p, t := range other {
		if prev, ok := s[p]; ok && prev != t {
			if prev == "null" {
				s[p] = t
			} else if t != "null" {
				s[p] = "mixed"
			}
			continue
		}
		s[p] = t
	}
}

// underEmptyArray: p lies under an array that next has, without elements.
func underEmptyArray(next Shape, p string) bool {
	for i := strings.Index(p, "[]"); i >= 0; {
		arr := p[:i]
		if next[arr] == "array" {
			if _, has := next[arr+"[]"]; !has {
				return true
			}
		}
		j := strings.Index(p[i+2:], "[]")
		if j < 0 {
			break
		}
		i += 2 + j
	}
	return false
}

// underRemoved: an ancestor of p is itself removed or retyped, so only the
// ancestor is reported.
func underRemoved(learned, next Shape, p string) bool {
	for i := len(p) - 1; i > 0; i-- {
		if p[i] != '.' && !(p[i] == '[' && strings.HasPrefix(p[i:], "[]")) {
			continue
		}
		anc := p[:i]
		if _, ok := learned[anc]; !ok {
			continue
		}
		if nt, ok := next[anc]; !ok || nt != learned[anc] {
			return true
		}
	}
	return false
}
