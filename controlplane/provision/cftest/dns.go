package cftest

import (
	"net/http"
	"sort"
	"strings"
	"time"
)

type record struct {
	id, typ, name, content, comment string
	proxied                         bool
	ttl                             int
	created, modified               time.Time
}

func (r *record) wire() map[string]any {
	return map[string]any{
		"id": r.id, "type": r.typ, "name": r.name, "content": r.content, "proxied": r.proxied,
		"proxiable": r.typ == "A" || r.typ == "AAAA" || r.typ == "CNAME", "ttl": r.ttl, "comment": nilIfEmpty(r.comment),
		"created_on": r.created.UTC().Format(time.RFC3339Nano), "modified_on": r.modified.UTC().Format(time.RFC3339Nano),
		"meta": map[string]any{}, "settings": map[string]any{}, "tags": []string{}, "zone_id": ZoneID, "zone_name": ZoneName,
	}
}

func nilIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// fqdn makes a record name fully qualified in the zone, as Cloudflare does:
// "@" is the apex, a name outside the zone gets the zone appended.
func fqdn(name string) string {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	switch {
	case name == "@" || name == ZoneName:
		return ZoneName
	case strings.HasSuffix(name, "."+ZoneName):
		return name
	}
	return name + "." + ZoneName
}

type recordInput struct {
	Type    *string `json:"type"`
	Name    *string `json:"name"`
	Content *string `json:"content"`
	Proxied *bool   `json:"proxied"`
	TTL     *int    `json:"ttl"`
	Comment *string `json:"comment"`
}

// apply validates in over r (a new record or a copy of an existing one).
func (s *Server) applyLocked(r *record, in recordInput) *failure {
	if in.Type != nil {
		r.typ = *in.Type
	}
	if in.Name != nil {
		r.name = fqdn(*in.Name)
	}
	if in.Content != nil {
		r.content = *in.Content
	}
	if in.Proxied != nil {
		r.proxied = *in.Proxied
	}
	if in.TTL != nil {
		r.ttl = *in.TTL
	}
	if in.Comment != nil {
		r.comment = *in.Comment
	}
	switch r.typ {
	case "A", "AAAA", "CNAME", "TXT":
	case "":
		return badRequest(9000, "DNS name is invalid: type is required")
	default:
		return badRequest(1004, "DNS Validation Error: cftest serves A, AAAA, CNAME and TXT records")
	}
	switch {
	case r.name == "" || strings.Contains(r.name, " "):
		return badRequest(9005, "Content for record name is invalid")
	case r.content == "":
		return badRequest(9021, "Content for "+r.typ+" record is invalid. Must not be empty.")
	case r.proxied && r.typ == "TXT":
		return badRequest(9004, "This record type cannot be proxied.")
	case r.ttl == 0:
		r.ttl = 1
	case r.ttl != 1 && (r.ttl < 60 || r.ttl > 86400):
		return badRequest(9303, "TTL must be between 60 and 86400 seconds, or 1 for Automatic.")
	}
	if r.proxied {
		r.ttl = 1
	}
	for _, o := range s.records {
		if o.id == r.id || o.name != r.name {
			continue
		}
		if o.typ == r.typ && o.content == r.content {
			return badRequest(81058, "An identical record already exists.")
		}
		if (r.typ == "CNAME" && o.typ != "TXT") || (o.typ == "CNAME" && r.typ != "TXT") {
			return badRequest(81053, "An A, AAAA, or CNAME record with that host already exists. For more details, refer to <https://developers.cloudflare.com/dns/manage-dns-records/troubleshooting/records-with-same-name/>.")
		}
	}
	return nil
}

func (s *Server) createRecord(_ *http.Request, body []byte) (any, *pageInfo, *failure) {
	var in recordInput
	if f := decode(body, &in); f != nil {
		return nil, nil, f
	}
	now := s.now()
	r := &record{id: randomHex(32), created: now, modified: now}
	if f := s.applyLocked(r, in); f != nil {
		return nil, nil, f
	}
	s.records[r.id] = r
	return r.wire(), nil, nil
}

func (s *Server) recordLocked(r *http.Request) (*record, *failure) {
	rec, ok := s.records[r.PathValue("id")]
	if !ok {
		return nil, notFound(81044, "Record does not exist.")
	}
	return rec, nil
}

func (s *Server) listRecords(r *http.Request, _ []byte) (any, *pageInfo, *failure) {
	q := r.URL.Query()
	name := q.Get("name")
	if v := q.Get("name.exact"); v != "" {
		name = v
	}
	var match []*record
	for _, rec := range s.records {
		switch {
		case name != "" && rec.name != fqdn(name),
			q.Has("type") && rec.typ != q.Get("type"),
			q.Has("content") && rec.content != q.Get("content"),
			q.Has("content.exact") && rec.content != q.Get("content.exact"),
			q.Has("proxied") && (q.Get("proxied") == "true") != rec.proxied,
			q.Has("name.startswith") && !strings.HasPrefix(rec.name, q.Get("name.startswith")),
			q.Has("name.endswith") && !strings.HasSuffix(rec.name, q.Get("name.endswith")),
			q.Has("comment.exact") && rec.comment != q.Get("comment.exact"):
			continue
		}
		match = append(match, rec)
	}
	sort.Slice(match, func(i, j int) bool {
		if match[i].name != match[j].name {
			return match[i].name < match[j].name
		}
		return match[i].id < match[j].id
	})
	cut, info, f := page(r, match, 100, 5000)
	if f != nil {
		return nil, nil, f
	}
	out := make([]map[string]any, 0, len(cut))
	for _, rec := range cut {
		out = append(out, rec.wire())
	}
	return out, info, nil
}

func (s *Server) getRecord(r *http.Request, _ []byte) (any, *pageInfo, *failure) {
	rec, f := s.recordLocked(r)
	if f != nil {
		return nil, nil, f
	}
	return rec.wire(), nil, nil
}

// updateRecord is PUT: the body replaces the record.
func (s *Server) updateRecord(r *http.Request, body []byte) (any, *pageInfo, *failure) {
	return s.change(r, body, true)
}

// editRecord is PATCH: the body's fields change the record.
func (s *Server) editRecord(r *http.Request, body []byte) (any, *pageInfo, *failure) {
	return s.change(r, body, false)
}

func (s *Server) change(r *http.Request, body []byte, replace bool) (any, *pageInfo, *failure) {
	rec, f := s.recordLocked(r)
	if f != nil {
		return nil, nil, f
	}
	var in recordInput
	if f := decode(body, &in); f != nil {
		return nil, nil, f
	}
	next := *rec
	if replace {
		next = record{id: rec.id, created: rec.created}
	}
	next.modified = s.now()
	if f := s.applyLocked(&next, in); f != nil {
		return nil, nil, f
	}
	*rec = next
	return rec.wire(), nil, nil
}

func (s *Server) deleteRecord(r *http.Request, _ []byte) (any, *pageInfo, *failure) {
	rec, f := s.recordLocked(r)
	if f != nil {
		return nil, nil, f
	}
	delete(s.records, rec.id)
	return map[string]any{"id": rec.id}, nil, nil
}

// Record is a DNS record as the server holds it, for assertions.
type Record struct {
	ID, Type, Name, Content string
	Proxied                 bool
	TTL                     int
}

// Records returns every DNS record of the zone, by name.
func (s *Server) Records() []Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Record, 0, len(s.records))
	for _, r := range s.records {
		out = append(out, Record{r.id, r.typ, r.name, r.content, r.proxied, r.ttl})
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Name < out[j].Name || (out[i].Name == out[j].Name && out[i].ID < out[j].ID)
	})
	return out
}
