package federation

import (
	"encoding/json"
	"strings"
)

// End-to-end encryption over federation (spec: server-server-api.md,
// "End-to-End Encryption" and "Device Management"): the three queries other
// servers make of this one. The answers come from the client API's E2EE
// code (which owns device keys, one-time key claims and cross-signing
// keys), installed with SetE2EE; the EDUs (m.direct_to_device,
// m.device_list_update, m.signing_key_update) are registered with
// HandleEDU by whoever wires the two together (cmd/engram).

// E2EE answers other servers' key queries; each method returns the JSON
// answer and the HTTP status.
type E2EE interface {
	// FedKeysQuery answers POST /user/keys/query (the request body).
	FedKeysQuery(origin string, body []byte) ([]byte, int)
	// FedKeysClaim answers POST /user/keys/claim (the request body).
	FedKeysClaim(origin string, body []byte) ([]byte, int)
	// FedUserDevices answers GET /user/devices/{userId}.
	FedUserDevices(origin, user string) ([]byte, int)
}

// SetE2EE installs what answers the end-to-end encryption queries. Until
// then they are answered 404 M_UNRECOGNIZED, as by a server without E2EE.
func (f *Federation) SetE2EE(e E2EE) { f.e2ee = e }

func (f *Federation) e2eeRoutes() []route {
	mk := func(method, path string, h func(*req) error) route {
		return route{method, strings.Split(strings.Trim(path, "/"), "/"), true, h}
	}
	return []route{
		mk("POST", "/_matrix/federation/v1/user/keys/query", f.handleUserKeysQuery),
		mk("POST", "/_matrix/federation/v1/user/keys/claim", f.handleUserKeysClaim),
		mk("GET", "/_matrix/federation/v1/user/devices/{userId}", f.handleUserDevices),
	}
}

var errNoE2EE = ferr(404, "M_UNRECOGNIZED", "Unrecognized request")

func (f *Federation) handleUserKeysQuery(r *req) error {
	if f.e2ee == nil {
		return errNoE2EE
	}
	if !json.Valid(r.body) {
		return ferr(400, "M_NOT_JSON", "Body is not JSON")
	}
	b, status := f.e2ee.FedKeysQuery(r.origin, r.body)
	r.raw(status, b)
	return nil
}

func (f *Federation) handleUserKeysClaim(r *req) error {
	if f.e2ee == nil {
		return errNoE2EE
	}
	if !json.Valid(r.body) {
		return ferr(400, "M_NOT_JSON", "Body is not JSON")
	}
	b, status := f.e2ee.FedKeysClaim(r.origin, r.body)
	r.raw(status, b)
	return nil
}

func (f *Federation) handleUserDevices(r *req) error {
	if f.e2ee == nil {
		return errNoE2EE
	}
	user := r.param("userId")
	// "the user ID must be of a user on the receiving server"
	if i := strings.IndexByte(user, ':'); !strings.HasPrefix(user, "@") || i < 0 || user[i+1:] != f.cfg.ServerName {
		return ferr(400, "M_INVALID_PARAM", "Not a user of this server")
	}
	b, status := f.e2ee.FedUserDevices(r.origin, user)
	r.raw(status, b)
	return nil
}
