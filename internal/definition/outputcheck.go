package definition

import (
	"fmt"
	"sort"
	"strings"
)

// OutputMisfit is the first way a supplied step output does not fit what the
// definition knows of the step's output: Path is below the output ("body.id",
// "" for the value as a whole).
type OutputMisfit struct {
	Path    string
	Message string
}

// CheckOutput checks an output supplied for a step in place of running it (an
// operator's skipStep): normalized like a stored output, it must have the
// types the step's output shape declares (an http step's status an int, its
// body what expect.schema says, an llm step's text a string...) and every
// field the workflow's expressions read by a literal path
// (OutputPathsRead). What the definition does not know is accepted. It
// returns nil when the output fits.
func (d *Definition) CheckOutput(stepID string, output any) *OutputMisfit {
	v := NormalizeJSON(normalizedCopy(output))
	if m := d.types.outputs[stepID].misfit(v, ""); m != nil {
		return m
	}
	for _, p := range d.OutputPathsRead(stepID) {
		if m := missingPath(v, strings.Split(strings.ReplaceAll(p, "[]", ".[]"), "."), ""); m != nil {
			return m
		}
	}
	return nil
}

// misfit compares v with the shape s at path.
func (s *shape) misfit(v any, path string) *OutputMisfit {
	if s == nil {
		return nil
	}
	bad := func(want string) *OutputMisfit {
		return &OutputMisfit{Path: path, Message: fmt.Sprintf("must be %s, got %s", want, jsonKind(v))}
	}
	switch s.kind {
	case shapeInt:
		if _, ok := v.(int64); !ok {
			return bad("an integer")
		}
	case shapeDouble:
		switch v.(type) {
		case int64, float64:
		default:
			return bad("a number")
		}
	case shapeString:
		if _, ok := v.(string); !ok {
			return bad("a string")
		}
	case shapeBool:
		if _, ok := v.(bool); !ok {
			return bad("a boolean")
		}
	case shapeNull:
		if v != nil {
			return bad("null")
		}
	case shapeList:
		l, ok := v.([]any)
		if !ok {
			return bad("a list")
		}
		for i, e := range l {
			if m := s.elem.misfit(e, fmt.Sprintf("%s[%d]", path, i)); m != nil {
				return m
			}
		}
	case shapeObject, shapeMap:
		o, ok := v.(map[string]any)
		if !ok {
			if s.maybeNotObject {
				return nil
			}
			return bad("an object")
		}
		keys := make([]string, 0, len(o))
		for k := range o {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if m := s.field(k).misfit(o[k], joinPath(path, k)); m != nil {
				return m
			}
		}
	}
	return nil
}

// missingPath reports the first field of segs (below path) absent from v;
// "[]" walks every element of a list. A value of another kind than the path
// expects is left to the shape check.
func missingPath(v any, segs []string, path string) *OutputMisfit {
	if len(segs) == 0 || segs[0] == "" {
		return nil
	}
	if segs[0] == "[]" {
		l, _ := v.([]any)
		for i, e := range l {
			if m := missingPath(e, segs[1:], fmt.Sprintf("%s[%d]", path, i)); m != nil {
				return m
			}
		}
		return nil
	}
	o, ok := v.(map[string]any)
	if !ok {
		if v == nil {
			return &OutputMisfit{Path: path, Message: "is required: the workflow's expressions read " + joinPath(path, segs[0])}
		}
		return nil
	}
	e, ok := o[segs[0]]
	p := joinPath(path, segs[0])
	if !ok {
		return &OutputMisfit{Path: p, Message: "is required: the workflow's expressions read it"}
	}
	return missingPath(e, segs[1:], p)
}

func joinPath(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case int64:
		return "an integer"
	case float64:
		return "a number"
	case []any:
		return "a list"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}
