package api

import (
	"net/url"
	"strings"

	"github.com/valyala/fasthttp"
)

// handler serves one route. It writes the response itself on success and
// returns an error otherwise (*Error for Matrix errors; anything else is a
// 500 M_UNKNOWN, logged).
type handler func(r *Req) error

type route struct {
	method  string
	pattern string
	metrics routeMetrics
	segs    []string // literal segments ("" where isParam)
	isParam []bool
	names   []string
	auth    bool
	h       handler
}

// router matches escaped paths segment by segment, so a parameter may hold an
// encoded '/' (transaction IDs, state keys) without breaking the match.
type router struct {
	bySegs map[int][]*route
}

const (
	public = false
	authed = true
)

// handle registers a route. Patterns use {name} for a parameter segment.
func (rt *router) handle(method, pattern string, auth bool, h handler) {
	if rt.bySegs == nil {
		rt.bySegs = map[int][]*route{}
	}
	parts := strings.Split(strings.Trim(pattern, "/"), "/")
	r := &route{method: method, pattern: pattern, segs: make([]string, len(parts)), isParam: make([]bool, len(parts)), auth: auth, h: h}
	for i, p := range parts {
		if strings.HasPrefix(p, "{") && strings.HasSuffix(p, "}") {
			r.names = append(r.names, p[1:len(p)-1])
			r.isParam[i] = true
		} else {
			r.segs[i] = p
		}
	}
	rt.bySegs[len(parts)] = append(rt.bySegs[len(parts)], r)
}

// all returns every route, in registration order per path length.
func (rt *router) all() []*route {
	var out []*route
	for n := 0; n <= 16; n++ {
		out = append(out, rt.bySegs[n]...)
	}
	return out
}

// client registers a client-server route under /v3 and the legacy /r0.
func (rt *router) client(method, pattern string, auth bool, h handler) {
	rt.handle(method, "/_matrix/client/v3"+pattern, auth, h)
	rt.handle(method, "/_matrix/client/r0"+pattern, auth, h)
}

// match finds the route for a raw path. It reports whether some route
// matched the path with another method (for 405).
func (rt *router) match(method string, rawPath []byte, params []string) (*route, []string, bool) {
	path := strings.Trim(string(rawPath), "/")
	var segs [16]string
	n := 0
	for n < len(segs) {
		i := strings.IndexByte(path, '/')
		if i < 0 {
			segs[n] = path
			n++
			break
		}
		segs[n] = path[:i]
		path = path[i+1:]
		n++
	}
	if n == len(segs) && path != "" {
		return nil, nil, false
	}
	otherMethod := false
	for _, r := range rt.bySegs[n] {
		ok := true
		for i, lit := range r.segs {
			if !r.isParam[i] && lit != segs[i] {
				ok = false
				break
			}
		}
		if !ok {
			continue
		}
		if r.method != method {
			otherMethod = true
			continue
		}
		params = params[:0]
		for i := range r.segs {
			if r.isParam[i] {
				v, err := url.PathUnescape(segs[i])
				if err != nil {
					return nil, nil, false
				}
				params = append(params, v)
			}
		}
		return r, params, false
	}
	return nil, nil, otherMethod
}

// Req is one request being served.
type Req struct {
	ctx    *fasthttp.RequestCtx
	s      *Server
	route  *route
	params []string
	// User and Device are set for authenticated routes.
	User, Device string
}

// Param returns a path parameter by name ("" if absent).
func (r *Req) Param(name string) string {
	for i, n := range r.route.names {
		if n == name && i < len(r.params) {
			return r.params[i]
		}
	}
	return ""
}

// Query returns a query-string argument.
func (r *Req) Query(name string) string { return string(r.ctx.QueryArgs().Peek(name)) }
