package api

import (
	"encoding/json"
	"net/url"
	"strings"

	"engram/projections"
)

// Pushers API (client-server-api, "Push Notifications", client
// behaviour). Pushers are logged (KindPusher) and folded by
// projections.Pushers; the pusher pool (push_gateway.go) delivers.

func (s *Server) pusherRoutes() {
	rt := &s.rt
	rt.client("GET", "/pushers", authed, s.getPushers)
	rt.client("POST", "/pushers/set", authed, s.setPusher)
}

// pushGatewayPath is the only path a gateway URL may have ("MUST be an
// HTTPS URL with a path of /_matrix/push/v1/notify"; plain HTTP is
// accepted too, as Synapse does).
const pushGatewayPath = "/_matrix/push/v1/notify"

func (s *Server) getPushers(r *Req) error {
	ps, err := s.store.UserPushers(r.User)
	if err != nil {
		return err
	}
	out := make([]map[string]any, 0, len(ps))
	for _, p := range ps {
		data := json.RawMessage("{}")
		if len(p.Data) > 0 {
			data = p.Data
		}
		m := map[string]any{"pushkey": p.PushKey, "kind": p.Kind, "app_id": p.AppID,
			"app_display_name": p.AppDisplayName, "device_display_name": p.DeviceDisplayName,
			"lang": p.Lang, "data": data}
		if p.ProfileTag != "" {
			m["profile_tag"] = p.ProfileTag
		}
		out = append(out, m)
	}
	return r.json(map[string]any{"pushers": out})
}

func (s *Server) setPusher(r *Req) error {
	var body struct {
		PushKey           *string                    `json:"pushkey"`
		Kind              json.RawMessage            `json:"kind"`
		AppID             *string                    `json:"app_id"`
		AppDisplayName    *string                    `json:"app_display_name"`
		DeviceDisplayName *string                    `json:"device_display_name"`
		ProfileTag        string                     `json:"profile_tag"`
		Lang              *string                    `json:"lang"`
		Data              map[string]json.RawMessage `json:"data"`
		Append            bool                       `json:"append"`
	}
	if e := r.decode(&body); e != nil {
		return e
	}
	var missing []string
	if body.PushKey == nil {
		missing = append(missing, "pushkey")
	}
	if body.AppID == nil {
		missing = append(missing, "app_id")
	}
	if len(body.Kind) == 0 {
		missing = append(missing, "kind")
	}
	if len(missing) > 0 {
		return errMissing("Missing parameters: " + strings.Join(missing, ", "))
	}
	if len(*body.AppID) > 64 || len(*body.PushKey) > 512 || *body.AppID == "" || *body.PushKey == "" {
		return errInvalid("app_id must be 1-64 characters and pushkey 1-512 bytes")
	}
	key := projections.PusherKey{UserID: r.User, AppID: *body.AppID, PushKey: *body.PushKey}
	rec := &projections.PusherRecord{PusherKey: key, TS: nowMS(), DeviceID: r.Device}
	if string(body.Kind) != "null" {
		var kind string
		if json.Unmarshal(body.Kind, &kind) != nil {
			return errBadJSON("kind must be a string or null")
		}
		if kind != "http" {
			return errInvalid("Unsupported pusher kind " + kind + ": only http pushers are supported")
		}
		for _, f := range []struct {
			name string
			v    *string
		}{{"app_display_name", body.AppDisplayName}, {"device_display_name", body.DeviceDisplayName}, {"lang", body.Lang}} {
			if f.v == nil {
				missing = append(missing, f.name)
			}
		}
		if body.Data == nil {
			missing = append(missing, "data")
		}
		if len(missing) > 0 {
			return errMissing("Missing parameters: " + strings.Join(missing, ", "))
		}
		var gw string
		if json.Unmarshal(body.Data["url"], &gw) != nil || gw == "" {
			return errMissing("data.url is required for http pushers")
		}
		u, err := url.Parse(gw)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.Path != pushGatewayPath {
			return errInvalid("data.url must be an http(s) URL with the path " + pushGatewayPath)
		}
		if f, ok := body.Data["format"]; ok {
			var format string
			if json.Unmarshal(f, &format) != nil || (format != "event_id_only" && format != "") {
				return errInvalid("data.format must be event_id_only")
			}
		}
		data, _ := json.Marshal(body.Data)
		rec.Kind, rec.Data = kind, data
		rec.AppDisplayName, rec.DeviceDisplayName, rec.Lang, rec.ProfileTag = *body.AppDisplayName, *body.DeviceDisplayName, *body.Lang, body.ProfileTag
		rec.StartSeq = s.log.Last()
		if !body.Append {
			all, err := s.store.UserPushers("")
			if err != nil {
				return err
			}
			for _, p := range all {
				if p.AppID == key.AppID && p.PushKey == key.PushKey && p.UserID != key.UserID {
					rec.Remove = append(rec.Remove, p.PusherKey)
				}
			}
		}
	}
	lr, err := projections.Encode(rec)
	if err != nil {
		return err
	}
	if _, err := s.log.Append(lr); err != nil {
		return err
	}
	s.hub.pushers.refresh()
	return r.json(struct{}{})
}
