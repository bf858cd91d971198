package definition

import (
	_ "cel.dev/cel-go/cel"
	_ "cel.dev/cel-go/ext"
	_ "github.com/santhosh-tekuri/jsonschema/v6"
	_ "github.com/goccy/go-yaml"
)
