// Package webhook owns outbound webhooks: a tenant's endpoints and their
// signing secrets, the outbox of deliveries written in the transaction of
// the run events they carry, and the delivery attempts that follow the
// Standard Webhooks specification (signing, retry schedule, classification
// of responses, disabling an endpoint that keeps failing).
package webhook

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"time"
)

// SecretPrefix starts every endpoint secret, as the specification names it.
const SecretPrefix = "whsec_"

// ErrBadSecret reports a secret that is not "whsec_" + base64 of 24-64 bytes.
var ErrBadSecret = errors.New("webhook: malformed secret")

// NewSecret returns a fresh random signing secret.
func NewSecret() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return SecretPrefix + base64.StdEncoding.EncodeToString(b[:])
}

func secretKey(secret string) ([]byte, error) {
	raw, ok := strings.CutPrefix(secret, SecretPrefix)
	if !ok {
		return nil, ErrBadSecret
	}
	key, err := base64.StdEncoding.DecodeString(raw)
	if err != nil || len(key) < 24 || len(key) > 64 {
		return nil, ErrBadSecret
	}
	return key, nil
}

// Sign returns the webhook-signature header value for a message: one
// "v1,<base64 HMAC-SHA256 of id.timestamp.body>" per secret, space
// separated, so receivers holding either secret verify during a rotation.
func Sign(id string, ts time.Time, body []byte, secrets ...string) (string, error) {
	var sigs []string
	for _, s := range secrets {
		key, err := secretKey(s)
		if err != nil {
			return "", err
		}
		mac := hmac.New(sha256.New, key)
		mac.Write([]byte(id + "." + strconv.FormatInt(ts.Unix(), 10) + "."))
		mac.Write(body)
		sigs = append(sigs, "v1,"+base64.StdEncoding.EncodeToString(mac.Sum(nil)))
	}
	return strings.Join(sigs, " "), nil
}

// Headers returns the three Standard Webhooks headers of a message.
func Headers(id string, ts time.Time, body []byte, secrets ...string) (map[string]string, error) {
	sig, err := Sign(id, ts, body, secrets...)
	if err != nil {
		return nil, err
	}
	return map[string]string{
		"webhook-id":        id,
		"webhook-timestamp": strconv.FormatInt(ts.Unix(), 10),
		"webhook-signature": sig,
	}, nil
}
