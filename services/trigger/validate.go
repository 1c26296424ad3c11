package trigger

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"cloud.google.com/go/civil"

	"github.com/sluicehq/sluice/pkg/mapping"
	"github.com/sluicehq/sluice/pkg/validation"
	"github.com/sluicehq/sluice/pkg/vocab"
	"github.com/sluicehq/sluice/pkg/warehouse"
)

// Validator samples an ingestion and reports on its mapping
// (validation.Validator behind an adapter). A zero day means the most
// recent day with rows; a zero limit the default.
type Validator interface {
	Validate(ctx context.Context, project, ingestion string, day civil.Date, limit int) (mapping.Report, error)
}

const validatePattern = "POST /v1/ingestions/{name}/validate"

// withValidate serves POST /v1/ingestions/{name}/validate with v in front
// of next, which keeps every other route.
func (s *Service) withValidate(next http.Handler, v Validator) http.Handler {
	mux := http.NewServeMux()
	mux.Handle(validatePattern, s.observe(named(validatePattern, s.authenticate(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.validate(w, r, v)
	})))))
	mux.Handle("/", next)
	return mux
}

// validateRequest is the optional body: {"date": "YYYY-MM-DD", "limit": N}.
type validateRequest struct {
	Date  json.RawMessage `json:"date"`
	Limit json.RawMessage `json:"limit"`
}

// warehouseFailure is the 502 answer: the warehouse could not run the query.
type warehouseFailure struct {
	Error     string         `json:"error"`    // "QUERY_ERROR: column foo does not exist"
	Category  vocab.Category `json:"category"` // QUERY_ERROR, CONNECTION_ERROR, ...
	Transient bool           `json:"transient"`
	Reason    string         `json:"reason"`
}

// validate answers 200 with the report when the mapping can be enabled,
// 422 with the report when it cannot, 400 naming a bad field, 404 for an
// ingestion the key's project lacks, 502 when the warehouse fails.
func (s *Service) validate(w http.ResponseWriter, r *http.Request, v Validator) {
	project, name := projectFrom(r.Context()), r.PathValue("name")
	if _, ok := s.file.Ingestion(project, name); !ok {
		writeError(w, &apiError{Status: http.StatusNotFound, Error: "unknown ingestion", Field: "name",
			Reason: fmt.Sprintf("this project has no ingestion %s", quote(name))})
		return
	}
	body, aerr := s.readBody(w, r)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	day, limit, aerr := decodeValidate(body)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	rep, err := v.Validate(r.Context(), project, name, day, limit)
	var oe *validation.OptionError
	switch {
	case errors.As(err, &oe):
		writeError(w, badField(oe.Field, "%s", oe.Reason))
		return
	case errors.Is(err, validation.ErrUnknownIngestion):
		writeError(w, &apiError{Status: http.StatusNotFound, Error: "unknown ingestion", Field: "name",
			Reason: fmt.Sprintf("this project has no ingestion %s", quote(name))})
		return
	case err != nil:
		cat, transient := warehouse.Categorize(err)
		s.log.Warn("validation did not reach a report", "project", project, "ingestion", name, "category", cat, "err", err)
		writeJSON(w, http.StatusBadGateway, warehouseFailure{Error: err.Error(), Category: cat, Transient: transient,
			Reason: "the warehouse could not sample the ingestion's query"})
		return
	}
	status := http.StatusOK
	if !rep.OK {
		status = http.StatusUnprocessableEntity
	}
	writeJSON(w, status, rep)
}

// decodeValidate reads the optional body; an empty body takes the defaults.
func decodeValidate(body []byte) (civil.Date, int, *apiError) {
	var req validateRequest
	if len(bytes.TrimSpace(body)) == 0 {
		return civil.Date{}, 0, nil
	}
	if aerr := decodeStrict(body, &req); aerr != nil {
		return civil.Date{}, 0, aerr
	}
	var day civil.Date
	if present(req.Date) {
		var s string
		if err := json.Unmarshal(req.Date, &s); err != nil {
			return civil.Date{}, 0, badField("date", "want a string YYYY-MM-DD")
		}
		t, aerr := parseDate("date", s)
		if aerr != nil {
			return civil.Date{}, 0, aerr
		}
		day = civil.DateOf(t)
	}
	var limit int
	if present(req.Limit) {
		if err := json.Unmarshal(req.Limit, &limit); err != nil || limit < 1 || limit > validation.MaxLimit {
			return civil.Date{}, 0, badField("limit", "want a whole number from 1 to %d", validation.MaxLimit)
		}
	}
	return day, limit, nil
}

func present(raw json.RawMessage) bool {
	return len(raw) > 0 && !bytes.Equal(bytes.TrimSpace(raw), []byte("null"))
}
