package limits

import "time"

// Limit is a named concurrency limit as the API shows it, with what runs
// under it and what waits for it now.
type Limit struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Limit     int       `json:"limit"`
	Running   int       `json:"running"`
	Held      int       `json:"held"`
	UpdatedBy string    `json:"updatedBy"`
	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`
}
