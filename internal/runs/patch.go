package runs

import (
	"fmt"
	"reflect"
	"strings"
	"sync"

	"entgo.io/ent"
)

// The run state keeps in-memory copies of the rows it changes. Ent's
// UpdateOne writes a row and then reads it back: two round trips, on the
// hottest path of the engine. Instead, a change is written as one UPDATE ...
// WHERE id (a bulk update of one row) and applied to the copy here, from the
// same mutation, so the copy is what the row now holds.

// copyMutation moves the fields set, added and cleared on src to dst.
func copyMutation(dst, src ent.Mutation) error {
	for _, f := range src.Fields() {
		v, _ := src.Field(f)
		if err := dst.SetField(f, v); err != nil {
			return err
		}
	}
	for _, f := range src.AddedFields() {
		v, _ := src.AddedField(f)
		if err := dst.AddField(f, v); err != nil {
			return err
		}
	}
	for _, f := range src.ClearedFields() {
		if err := dst.ClearField(f); err != nil {
			return err
		}
	}
	return nil
}

// mirror applies a mutation to the struct dst points to (an Ent entity,
// whose JSON tags name its columns): set fields take the mutation's value,
// added fields are added, cleared fields are zeroed.
func mirror(dst any, m ent.Mutation) error {
	v := reflect.ValueOf(dst).Elem()
	cols := columnsOf(v.Type())
	field := func(name string) (reflect.Value, error) {
		i, ok := cols[name]
		if !ok {
			return reflect.Value{}, fmt.Errorf("mirror %s: no field for column %q", v.Type().Name(), name)
		}
		return v.Field(i), nil
	}
	for _, name := range m.ClearedFields() {
		f, err := field(name)
		if err != nil {
			return err
		}
		f.SetZero()
	}
	for _, name := range m.Fields() {
		f, err := field(name)
		if err != nil {
			return err
		}
		val, _ := m.Field(name)
		if err := assign(f, reflect.ValueOf(val)); err != nil {
			return fmt.Errorf("mirror %s.%s: %w", v.Type().Name(), name, err)
		}
	}
	for _, name := range m.AddedFields() {
		f, err := field(name)
		if err != nil {
			return err
		}
		val, _ := m.AddedField(name)
		d := reflect.ValueOf(val)
		switch f.Kind() {
		case reflect.Int, reflect.Int32, reflect.Int64:
			f.SetInt(f.Int() + d.Int())
		default:
			return fmt.Errorf("mirror %s.%s: cannot add to %s", v.Type().Name(), name, f.Type())
		}
	}
	return nil
}

// assign sets f to val, through a fresh pointer when f is a pointer field
// (Ent's nillable fields).
func assign(f, val reflect.Value) error {
	switch {
	case val.Type().AssignableTo(f.Type()):
		f.Set(val)
	case f.Kind() == reflect.Pointer && val.Type().AssignableTo(f.Type().Elem()):
		p := reflect.New(f.Type().Elem())
		p.Elem().Set(val)
		f.Set(p)
	case val.Type().ConvertibleTo(f.Type()):
		f.Set(val.Convert(f.Type()))
	default:
		return fmt.Errorf("cannot assign %s to %s", val.Type(), f.Type())
	}
	return nil
}

var columnCache sync.Map // reflect.Type -> map[string]int

// columnsOf maps an entity's column names (its JSON tags) to field indexes.
func columnsOf(t reflect.Type) map[string]int {
	if m, ok := columnCache.Load(t); ok {
		return m.(map[string]int)
	}
	m := map[string]int{}
	for i := 0; i < t.NumField(); i++ {
		tag, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		if tag != "" && tag != "-" {
			m[tag] = i
		}
	}
	columnCache.Store(t, m)
	return m
}
