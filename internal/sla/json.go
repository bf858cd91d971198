package sla

import "encoding/json"

// jsonOf encodes a details map for a jsonb parameter (nil stays NULL).
func jsonOf(m map[string]any) any {
	if m == nil {
		return nil
	}
	b, _ := json.Marshal(m)
	return string(b)
}
