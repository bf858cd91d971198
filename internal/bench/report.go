package bench

import (
	"fmt"
	"io"
	"math"
	"strconv"
	"text/tabwriter"
)

// Goal is a target a figure is compared with.
type Goal struct {
	Value  float64
	AtMost bool   // the figure must not exceed Value (else: must reach it)
	Text   string // how the target reads, e.g. "<= 20 ms"
}

// Met reports whether v meets the goal; NaN (not measurable) never does.
func (g Goal) Met(v float64) bool {
	if math.IsNaN(v) {
		return false
	}
	if g.AtMost {
		return v <= g.Value
	}
	return v >= g.Value
}

func atMost(v float64, unit string) *Goal {
	return &Goal{Value: v, AtMost: true, Text: "<= " + trim(v) + " " + unit}
}

func atLeast(v float64, unit string) *Goal {
	return &Goal{Value: v, Text: ">= " + trim(v) + " " + unit}
}

// Figure is one measurement.
type Figure struct {
	Scenario string
	Name     string
	Value    float64 // NaN: could not be measured (the name says why)
	Unit     string
	Goal     *Goal  // nil: informational
	Text     string // if set, printed instead of the value and unit
}

func (f Figure) value() string {
	if f.Text != "" {
		return f.Text
	}
	if math.IsNaN(f.Value) {
		return "n/a"
	}
	return trim(f.Value) + " " + f.Unit
}

// Report is what a benchmark measured.
type Report struct {
	Figures   []Figure
	Targets   bool // figures were compared with targets
	Runs      int  // runs started
	Succeeded int  // of which succeeded
}

// Missed counts the figures that miss their target.
func (r *Report) Missed() int {
	n := 0
	for _, f := range r.Figures {
		if f.Goal != nil && !f.Goal.Met(f.Value) {
			n++
		}
	}
	return n
}

// Print writes the figures as a table: value, target, value/target and
// PASS or MISS.
func (r *Report) Print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "scenario\tfigure\tvalue\ttarget\tvalue/target\tverdict")
	for _, f := range r.Figures {
		target, ratio, verdict := "-", "-", ""
		if g := f.Goal; g != nil {
			target = g.Text
			if g.Value != 0 && !math.IsNaN(f.Value) {
				ratio = strconv.FormatFloat(f.Value/g.Value, 'f', 2, 64) + "x"
			}
			verdict = "PASS"
			if !g.Met(f.Value) {
				verdict = "MISS"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", f.Scenario, f.Name, f.value(), target, ratio, verdict)
	}
	tw.Flush()
	fmt.Fprintf(w, "\nruns: %d started, %d succeeded", r.Runs, r.Succeeded)
	if r.Targets {
		fmt.Fprintf(w, "; targets missed: %d (informational)", r.Missed())
	}
	fmt.Fprintln(w)
}

// trim prints a number with the precision its size deserves.
func trim(v float64) string {
	switch a := max(v, -v); {
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
}
