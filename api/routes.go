package api

import (
	"encoding/json"
	"strconv"

	"engram/projections"
)

// routes registers every endpoint. Each area of the API registers its own
// routes in its own file, so areas can grow independently.
func (s *Server) routes() {
	s.rt.handle("GET", "/", public, s.rootPage)
	s.rt.handle("GET", "/_matrix/client/versions", public, s.versions)
	if s.cfg.EnableMetrics {
		s.rt.handle("GET", "/metrics", public, s.metricsPage)
	}
	s.accountRoutes()
	s.roomRoutes()
	s.syncRoutes()
	s.voipRoutes()
	s.e2eeRoutes()
	s.relationRoutes()
	s.spaceOpenIDRoutes() // hierarchy.go, openid.go
}

const rootHTML = `<!doctype html>
<html><head><meta charset="utf-8"><title>engram</title></head>
<body><h1>engram is running</h1>
<p>This is a Matrix homeserver. Point a Matrix client at this address to use it.</p>
</body></html>
`

func (s *Server) rootPage(r *Req) error {
	r.ctx.Response.Header.SetContentType("text/html; charset=utf-8")
	r.ctx.SetBodyString(rootHTML)
	return nil
}

// specVersions are the client-server API versions engram answers to.
var versionsBody = []byte(`{"versions":["r0.6.1","v1.1","v1.2","v1.3","v1.4","v1.5","v1.6","v1.7","v1.8","v1.9","v1.10","v1.11","v1.12"],"unstable_features":{}}`)

func (s *Server) versions(r *Req) error {
	r.raw(200, versionsBody)
	return nil
}

func (s *Server) postFilter(r *Req) error {
	if r.Param("userId") != r.User {
		return errForbidden("Cannot create filters for other users")
	}
	var f map[string]json.RawMessage
	if e := r.decode(&f); e != nil {
		return e
	}
	body, _ := r.body()
	// Filter IDs only need to be unique per user; a log-independent random
	// ID is captured in the record so replay reproduces it.
	id := strconv.FormatUint(uint64(nowMS()), 36) + randomID(4)
	rec, err := projections.Encode(&projections.FilterRecord{UserID: r.User, FilterID: id, JSON: append([]byte(nil), body...)})
	if err != nil {
		return err
	}
	if _, err := s.log.Append(rec); err != nil {
		return err
	}
	return r.json(map[string]string{"filter_id": id})
}

func (s *Server) getFilter(r *Req) error {
	if r.Param("userId") != r.User {
		return errForbidden("Cannot read filters of other users")
	}
	f, err := s.store.Filter(r.User, r.Param("filterId"))
	if err != nil {
		return errNotFound("No such filter")
	}
	r.raw(200, f)
	return nil
}
