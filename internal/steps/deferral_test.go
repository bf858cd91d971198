package steps

import (
	"net/http"
	"testing"
)

func TestLimitHost(t *testing.T) {
	for in, want := range map[string]string{
		"https://API.example.com/x":      "api.example.com",
		"https://api.example.com:443/x":  "api.example.com",
		"http://api.example.com:80/x":    "api.example.com",
		"http://api.example.com:443/x":   "api.example.com:443",
		"https://api.example.com:8443/x": "api.example.com:8443",
		"http://127.0.0.1:41785/items/1": "127.0.0.1:41785",
	} {
		req, err := http.NewRequest("GET", in, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := limitHost(req); got != want {
			t.Errorf("limitHost(%s) = %q, want %q", in, got, want)
		}
	}
}
