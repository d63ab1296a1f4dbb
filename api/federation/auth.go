package federation

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"engram/dag"
)

// requestJSON is the object an X-Matrix signature covers ("Request
// Authentication"): method, uri (path and query as sent), origin,
// destination and, if there is a body, content.
func requestJSON(method, uri, origin, dest string, content []byte) ([]byte, error) {
	m := map[string]any{"method": method, "uri": uri, "origin": origin, "destination": dest}
	if len(content) > 0 {
		m["content"] = json.RawMessage(content)
	}
	return json.Marshal(m)
}

// authHeader signs a request as origin for dest.
func (f *Federation) authHeader(method, uri, dest string, content []byte) (string, error) {
	obj, err := requestJSON(method, uri, f.cfg.ServerName, dest, content)
	if err != nil {
		return "", err
	}
	signed, err := dag.SignJSON(obj, f.cfg.ServerName, f.cfg.Key.ID, f.cfg.Key.Key)
	if err != nil {
		return "", err
	}
	var s struct {
		Signatures map[string]map[string]string `json:"signatures"`
	}
	if err := json.Unmarshal(signed, &s); err != nil {
		return "", err
	}
	sig := s.Signatures[f.cfg.ServerName][f.cfg.Key.ID]
	return fmt.Sprintf(`X-Matrix origin="%s",destination="%s",key="%s",sig="%s"`, f.cfg.ServerName, dest, f.cfg.Key.ID, sig), nil
}

// xMatrix is a parsed X-Matrix Authorization header.
type xMatrix struct{ origin, dest, key, sig string }

var errBadAuth = errors.New("federation: malformed X-Matrix authorization")

// parseXMatrix parses `X-Matrix origin=...,destination=...,key="...",sig="..."`;
// values may be quoted ("parameter values may be quoted or unquoted").
func parseXMatrix(h string) (xMatrix, error) {
	var x xMatrix
	const scheme = "x-matrix "
	if len(h) < len(scheme) || !strings.EqualFold(h[:len(scheme)], scheme) {
		return x, errBadAuth
	}
	rest := strings.TrimSpace(h[len(scheme):])
	for len(rest) > 0 {
		eq := strings.IndexByte(rest, '=')
		if eq <= 0 {
			return x, errBadAuth
		}
		name := strings.ToLower(strings.TrimSpace(rest[:eq]))
		rest = strings.TrimLeft(rest[eq+1:], " ")
		var val string
		if strings.HasPrefix(rest, `"`) {
			var b strings.Builder
			i := 1
			for ; i < len(rest) && rest[i] != '"'; i++ {
				if rest[i] == '\\' && i+1 < len(rest) {
					i++
				}
				b.WriteByte(rest[i])
			}
			if i >= len(rest) {
				return x, errBadAuth
			}
			val, rest = b.String(), rest[i+1:]
		} else {
			end := strings.IndexByte(rest, ',')
			if end < 0 {
				end = len(rest)
			}
			val, rest = strings.TrimSpace(rest[:end]), rest[end:]
		}
		rest = strings.TrimLeft(rest, " ")
		if strings.HasPrefix(rest, ",") {
			rest = strings.TrimLeft(rest[1:], " ")
		} else if rest != "" {
			return x, errBadAuth
		}
		switch name {
		case "origin":
			x.origin = val
		case "destination":
			x.dest = val
		case "key":
			x.key = val
		case "sig":
			x.sig = val
		}
	}
	if x.origin == "" || x.key == "" || x.sig == "" {
		return x, errBadAuth
	}
	return x, nil
}

// verifyRequest checks an inbound request's X-Matrix header and returns the
// origin. "The destination name [...] If the destination does not match
// the receiving server, the request should be rejected"; a missing
// destination is accepted for older servers.
func (f *Federation) verifyRequest(method, uri string, content []byte, header string) (string, error) {
	x, err := parseXMatrix(header)
	if err != nil {
		return "", err
	}
	if x.dest != "" && x.dest != f.cfg.ServerName {
		return "", fmt.Errorf("federation: request is for %q, not us", x.dest)
	}
	dest := x.dest
	if dest == "" {
		dest = f.cfg.ServerName
	}
	obj, err := requestJSON(method, uri, x.origin, dest, content)
	if err != nil {
		return "", err
	}
	sigs, _ := json.Marshal(map[string]map[string]string{x.origin: {x.key: x.sig}})
	var m map[string]json.RawMessage
	if err := json.Unmarshal(obj, &m); err != nil {
		return "", err
	}
	m["signatures"] = sigs
	full, err := json.Marshal(m)
	if err != nil {
		return "", err
	}
	pub, err := f.keys.PublicKey(x.origin, x.key, 0)
	if err != nil {
		return "", err
	}
	if err := dag.VerifyJSON(full, x.origin, x.key, pub); err != nil {
		return "", err
	}
	return x.origin, nil
}
