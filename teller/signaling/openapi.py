"""The OpenAPI 3.1 document for the HTTP interface, served at /openapi.json."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .. import __version__

routes = web.RouteTableDef()

_ERROR = {"$ref": "#/components/responses/Error"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(s): _ERROR for s in statuses}


_ROOM = {"name": "room", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"}}
_RESOURCE = {"name": "resource", "in": "path", "required": True, "schema": {"type": "string"}}
_SDP_BODY = {"required": True, "content": {"application/sdp": {"schema": {"type": "string"}}}}
_SDP_CREATED = {
    "description": "The SDP answer; Location names the session resource.",
    "headers": {
        "Location": {"schema": {"type": "string"}},
        "ETag": {"schema": {"type": "string"}},
        "Link": {"description": "ICE servers (rel=ice-server)", "schema": {"type": "string"}},
    },
    "content": {"application/sdp": {"schema": {"type": "string"}}},
}
_CALL = {"name": "call", "in": "path", "required": True, "schema": {"type": "string"}}
_AGENT = {"name": "agent", "in": "path", "required": True, "schema": {"type": "string"}}
_FIELD = {"name": "field", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^FS_[0-9a-f]{8}$"}}
_EVIDENCE = {"name": "evidence", "in": "path", "required": True, "schema": {"type": "string"}}
_SNAPSHOT = {"name": "snapshot", "in": "path", "required": True, "schema": {"type": "string"}}
_UPLOAD = {"name": "upload", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^UP_[0-9a-f]{16}$"}}
_FIX = {"type": "object", "required": ["lat", "lon", "ts"], "properties": {
    "lat": {"type": "number", "minimum": -90, "maximum": 90}, "lon": {"type": "number", "minimum": -180, "maximum": 180},
    "ts": {"type": "number", "description": "epoch seconds of the fix"}, "accuracy_m": {"type": "number"},
    "speed_mps": {"type": "number"}, "heading_deg": {"type": "number"}, "altitude_m": {"type": "number"}}}
_OBJ = {"type": "object"}
_SID = {"name": "sid", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}}


def _action(summary: str, *errors: int, body: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"summary": summary, "responses": {"200": _json(_OBJ), **_errors(*errors)}}
    if body is not None:
        out["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return out


_TRICKLE = {"required": True, "content": {"application/trickle-ice-sdpfrag": {"schema": {"type": "string"}}}}


def document() -> dict[str, Any]:
    room_schema = {"$ref": "#/components/schemas/Room"}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Teller",
            "version": __version__,
            "description": "Remote-teller and video contact-centre platform. Signalling over "
            "WebSocket is described in docs/protocol.md; this document covers HTTP.",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {
                                "code": {"type": "string", "examples": ["token_expired", "room_forbidden", "invalid_sdp"]},
                                "message": {"type": "string"},
                                "details": {"type": "object"},
                            },
                        }
                    },
                },
                "Room": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "sid": {"type": "string"},
                        "created_at": {"type": "number"},
                        "max_participants": {"type": "integer"},
                        "empty_timeout_s": {"type": "number"},
                        "metadata": {"type": "object"},
                        "num_participants": {"type": "integer"},
                        "num_tracks": {"type": "integer"},
                    },
                },
                "Track": {
                    "type": "object",
                    "properties": {
                        "track_id": {"type": "string"},
                        "participant_id": {"type": "string"},
                        "kind": {"enum": ["audio", "video"]},
                        "source": {"type": "string"},
                        "name": {"type": "string"},
                        "codec": {"type": "string"},
                        "mid": {"type": "string"},
                    },
                },
                "Participant": {
                    "type": "object",
                    "properties": {
                        "participant_id": {"type": "string"},
                        "identity": {"type": "string"},
                        "name": {"type": "string"},
                        "role": {"enum": ["customer", "agent", "officer", "reviewer", "supervisor", "compliance", "service"]},
                        "kind": {"enum": ["websocket", "whip", "whep"]},
                        "joined_at": {"type": "number"},
                        "tracks": {"type": "array", "items": {"$ref": "#/components/schemas/Track"}},
                    },
                },
            },
            "responses": {"Error": _json({"$ref": "#/components/schemas/Error"}, "An error with a machine code")},
        },
        "security": [{"bearer": []}],
        "paths": {
            "/livez": {"get": {"summary": "Liveness: 200 while the process answers (never checks Redis)", "security": [], "responses": {"200": _json({"type": "object"})}}},
            "/healthz": {"get": {"summary": "Health: 200 when this process can work, 503 while the shared state store is unreachable", "security": [], "responses": {"200": _json({"type": "object"}), "503": _json({"type": "object"})}}},
            "/v1/rtc": {
                "get": {
                    "summary": "WebSocket signalling (protocol 1, docs/protocol.md)",
                    "parameters": [{"name": "access_token", "in": "query", "schema": {"type": "string"}}],
                    "responses": {"101": {"description": "Switching protocols"}},
                }
            },
            "/v1/rooms": {
                "get": {
                    "summary": "List rooms (admin grant)",
                    "responses": {"200": _json({"type": "object", "properties": {"rooms": {"type": "array", "items": room_schema}}}), **_errors(401, 403)},
                },
                "post": {
                    "summary": "Create a room (admin grant for that room or *)",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["name"],
                                    "properties": {
                                        "name": {"type": "string"},
                                        "max_participants": {"type": "integer", "minimum": 1, "maximum": 1000},
                                        "empty_timeout_s": {"type": "number", "minimum": 0, "maximum": 86400},
                                        "metadata": {"type": "object"},
                                    },
                                }
                            }
                        },
                    },
                    "responses": {"201": _json(room_schema, "Created"), **_errors(400, 401, 403, 409, 415)},
                },
            },
            "/v1/rooms/{room}": {
                "parameters": [_ROOM],
                "get": {"summary": "Get a room", "responses": {"200": _json(room_schema), **_errors(401, 403, 404)}},
                "delete": {
                    "summary": "Close a room; everyone in it is disconnected",
                    "responses": {"200": _json({"type": "object"}), **_errors(401, 403, 404)},
                },
            },
            "/v1/rooms/{room}/participants": {
                "parameters": [_ROOM],
                "get": {
                    "summary": "List participants",
                    "responses": {
                        "200": _json({"type": "object", "properties": {"participants": {"type": "array", "items": {"$ref": "#/components/schemas/Participant"}}}}),
                        **_errors(401, 403, 404),
                    },
                },
            },
            "/v1/rooms/{room}/participants/{participant}": {
                "parameters": [_ROOM, {"name": "participant", "in": "path", "required": True, "schema": {"type": "string"}}],
                "delete": {"summary": "Remove a participant", "responses": {"200": _json({"type": "object"}), **_errors(401, 403, 404)}},
            },
            "/v1/node": {"get": {"summary": "This process's load and counters: the node (embedded, node) or the signalling process (admin token for room *)", "responses": {"200": _json({"type": "object"}), **_errors(401, 403)}}},
            "/v1/nodes": {"get": {"summary": "The SFU node registry: live nodes with their load (admin token for room *)", "responses": {"200": _json({"type": "object", "properties": {"nodes": {"type": "array", "items": {"type": "object"}}}}), **_errors(401, 403, 503)}}},
            "/v1/dev/token": {
                "post": {
                    "summary": "A token for the embedded demo page (only when auth.dev_tokens is on)",
                    "security": [],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"type": "object", "required": ["room"], "properties": {"room": {"type": "string"}, "name": {"type": "string"}, "role": {"type": "string"}}}}},
                    },
                    "responses": {"200": _json({"type": "object", "properties": {"token": {"type": "string"}}}), **_errors(400, 403, 415)},
                }
            },
            "/whip/{room}": {
                "parameters": [_ROOM],
                "post": {
                    "summary": "WHIP publish (RFC 9725): SDP offer in, SDP answer out",
                    "requestBody": _SDP_BODY,
                    "responses": {"201": _SDP_CREATED, **_errors(400, 401, 403, 409, 415, 422)},
                },
            },
            "/whip/{room}/{resource}": {
                "parameters": [_ROOM, _RESOURCE],
                "patch": {"summary": "Trickle ICE candidates", "requestBody": _TRICKLE, "responses": {"204": {"description": "Applied"}, **_errors(400, 401, 403, 404, 415)}},
                "delete": {"summary": "End the publication", "responses": {"200": {"description": "Ended"}, **_errors(401, 403, 404)}},
            },
            "/whep/{room}": {
                "parameters": [_ROOM, {"name": "participant", "in": "query", "required": False, "schema": {"type": "string"}, "description": "Publisher to play; default: the most recent one"}],
                "post": {
                    "summary": "WHEP play: SDP offer in, SDP answer out",
                    "requestBody": _SDP_BODY,
                    "responses": {"201": _SDP_CREATED, **_errors(400, 401, 403, 404, 415, 422)},
                },
            },
            "/whep/{room}/{resource}": {
                "parameters": [_ROOM, _RESOURCE],
                "patch": {"summary": "Trickle ICE candidates", "requestBody": _TRICKLE, "responses": {"204": {"description": "Applied"}, **_errors(400, 401, 403, 404, 415)}},
                "delete": {"summary": "Stop playing", "responses": {"200": {"description": "Ended"}, **_errors(401, 403, 404)}},
            },
            "/v1/catalogue": {
                "get": {
                    "summary": "The business catalogue (public); ?lang=zh|en picks one language",
                    "security": [],
                    "parameters": [{"name": "lang", "in": "query", "schema": {"type": "string"}}],
                    "responses": {"200": _json(_OBJ), **_errors(400)},
                }
            },
            "/v1/calls": {
                "post": {
                    "summary": "A customer asks for a business and joins its queue (customer token; its room is the call's room)",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object", "required": ["business"], "properties": {"business": {"type": "string"}, "language": {"type": "string"}, "elderly": {"type": "boolean"}, "channel": {"type": "string"}, "target": {"type": "string", "enum": ["agent", "digital_human"]}}}}}},
                    "responses": {"201": _json(_OBJ), **_errors(400, 401, 403, 404, 415, 503)},
                },
                "get": {"summary": "Calls, optionally ?state= (supervisor)", "responses": {"200": _json(_OBJ), **_errors(401, 403)}},
            },
            "/v1/calls/{call}": {
                "parameters": [_CALL],
                "get": {"summary": "A call and its place in the queue (its customer, its agents, a supervisor)", "responses": {"200": _json(_OBJ), **_errors(401, 403, 404)}},
                "delete": {"summary": "Cancel a waiting call, or hang up a connected one (a supervisor gives ?reason=, which is logged)", "responses": {"200": _json(_OBJ), **_errors(401, 403, 404, 409)}},
            },
            "/v1/digital-human": {"get": {"summary": "The digital human: languages it speaks, FAQ size, its bots now, handovers by reason, answer start and barge-in p50 (staff)", "responses": {"200": _json(_OBJ), **_errors(401, 403, 503)}}},
            "/v1/digital-human/ask": {"post": _action("What the digital human would answer to a question, for checking the FAQ (supervisor)", 400, 401, 403, 503, body={"type": "object", "required": ["question"], "properties": {"question": {"type": "string"}, "language": {"type": "string"}}})},
            "/v1/calls/{call}/handover": {"parameters": [_CALL], "post": _action("A bot hands its call to a person: the call joins the skill's queue with the conversation so far (service or supervisor token)", 400, 401, 403, 404, 409, body={"type": "object", "properties": {"reason": {"type": "string"}, "skill": {"type": "string"}, "conversation": {"type": "array", "items": {"type": "object", "required": ["who", "text"], "properties": {"who": {"type": "string", "enum": ["customer", "bot"]}, "text": {"type": "string"}, "ts": {"type": "number"}}}}}})},
            "/v1/calls/{call}/accept": {"parameters": [_CALL], "post": _action("Take the call offered to this agent; the reply carries a token for the call's room", 401, 403, 404, 409)},
            "/v1/calls/{call}/decline": {"parameters": [_CALL], "post": _action("Decline the offered call; it goes to the next agent", 401, 403, 404, 409)},
            "/v1/calls/{call}/leave": {"parameters": [_CALL], "post": _action("Leave a call others carry on (after a warm transfer, a conference)", 401, 403, 404, 409)},
            "/v1/calls/{call}/invite": {"parameters": [_CALL], "post": _action("Add a third party (an available agent) to the call", 400, 401, 403, 404, 409, body={"type": "object", "required": ["agent_id"], "properties": {"agent_id": {"type": "string"}}})},
            "/v1/calls/{call}/transfer": {"parameters": [_CALL], "post": _action("Transfer to an agent or a skill, cold or warm", 400, 401, 403, 404, 409, body={"type": "object", "properties": {"agent_id": {"type": "string"}, "skill": {"type": "string"}, "warm": {"type": "boolean"}}})},
            "/v1/agents": {"get": {"summary": "Agents with their state (supervisor)", "responses": {"200": _json(_OBJ), **_errors(401, 403)}}},
            "/v1/agents/{agent}": {"parameters": [_AGENT], "put": _action("Register an agent: name, skills {skill: level 1-10}, languages (supervisor)", 400, 401, 403, body={"type": "object", "required": ["skills", "languages"], "properties": {"name": {"type": "string"}, "skills": {"type": "object"}, "languages": {"type": "array", "items": {"type": "string"}}}})},
            "/v1/agents/me": {"get": {"summary": "This agent: state, offered call, call (agent or reviewer token)", "responses": {"200": _json(_OBJ), **_errors(401, 403, 404)}}},
            "/v1/agents/me/state": {"post": _action("Set this agent's state: available, away (with a reason) or offline", 400, 401, 403, 404, 409, body={"type": "object", "required": ["state"], "properties": {"state": {"type": "string"}, "reason": {"type": "string"}}})},
            "/v1/agents/me/wrap-up": {"post": _action("Finish wrap-up with a code and notes; the agent takes calls again", 400, 401, 403, 404, 409, body={"type": "object", "required": ["code"], "properties": {"code": {"type": "string"}, "notes": {"type": "string"}}})},
            "/v1/calls/{call}/confirmations": {"parameters": [_CALL], "post": _action("Ask the customer to confirm a transaction; the account is masked (agent in the call); 409 identity_required while a business that needs identity has it neither passed nor overridden", 400, 401, 403, 404, 409, body={"type": "object", "required": ["what", "amount", "account"], "properties": {"what": {"type": "string"}, "amount": {"type": "string"}, "account": {"type": "string"}}})},
            "/v1/calls/{call}/confirmations/{request}": {"parameters": [_CALL, {"name": "request", "in": "path", "required": True, "schema": {"type": "string"}}], "post": _action("The customer's answer, kept as evidence: accepted, and a PNG data-URL signature where the business needs one", 400, 401, 403, 404, 409, body={"type": "object", "required": ["accepted"], "properties": {"accepted": {"type": "boolean"}, "signature": {"type": "string"}}})},
            "/v1/dev/agent": {"post": {"summary": "Demo only (auth.dev_tokens): register an agent with every skill and get its token", "security": [], "responses": {"200": _json(_OBJ), **_errors(400, 403)}}},
            "/v1/dev/supervisor": {"post": {"summary": "Demo only (auth.dev_tokens): a supervisor token", "security": [], "responses": {"200": _json(_OBJ), **_errors(400, 403)}}},
            "/v1/stats": {"get": {
                "summary": "Operations figures (requests, connected, abandoned, wait, talk and handle times, businesses done) by hour, day, business or agent (supervisor); ?format=csv",
                "parameters": [
                    {"name": "by", "in": "query", "schema": {"type": "string", "enum": ["hour", "day", "business", "agent"]}},
                    {"name": "from", "in": "query", "schema": {"type": "number"}},
                    {"name": "to", "in": "query", "schema": {"type": "number"}},
                    {"name": "format", "in": "query", "schema": {"type": "string", "enum": ["json", "csv"]}},
                ],
                "responses": {"200": {"description": "JSON rows, or CSV", "content": {"application/json": {"schema": _OBJ}, "text/csv": {"schema": {"type": "string"}}}}, **_errors(400, 401, 403)},
            }},
            "/v1/materials": {"post": {
                "summary": "Upload material to show customers: a PDF (rendered to page images, at most 30 pages, 10 MB) or a PNG/JPEG (agent, reviewer, supervisor)",
                "requestBody": {"required": True, "content": {"application/pdf": {"schema": {"type": "string", "format": "binary"}}, "image/png": {"schema": {"type": "string", "format": "binary"}}, "image/jpeg": {"schema": {"type": "string", "format": "binary"}}}},
                "responses": {"201": _json(_OBJ), **_errors(400, 401, 403, 413, 415)},
            }},
            "/v1/materials/{material}/{page}.png": {
                "parameters": [{"name": "material", "in": "path", "required": True, "schema": {"type": "string"}}, {"name": "page", "in": "path", "required": True, "schema": {"type": "integer"}}],
                "get": {"summary": "One page as PNG; the random material id in the URL is the permission", "security": [], "responses": {"200": {"description": "PNG", "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}}, **_errors(404)}},
            },
            "/v1/queues": {"get": {"summary": "Per skill: waiting, longest wait, answered, abandoned, service level (supervisor)", "responses": {"200": _json(_OBJ), **_errors(401, 403)}}},
            "/v1/recordings/login": {"post": _action("Demo only (auth.dev_tokens): a compliance or supervisor token for the replay page", 400, 403, body={"type": "object", "properties": {"name": {"type": "string"}, "role": {"type": "string", "enum": ["compliance", "supervisor"]}}})},
            "/v1/recordings": {"get": {
                "summary": "Search recorded sessions, newest first, paged by cursor (compliance, supervisor; audited)",
                "parameters": [{"name": n, "in": "query", "schema": {"type": "string"}} for n in (
                    "from", "to", "agent", "customer", "business", "outcome", "min_duration", "max_duration",
                    "flags", "status", "legal_hold", "cursor", "limit")],
                "responses": {"200": _json(_OBJ), **_errors(400, 401, 403)},
            }},
            "/v1/recordings/spot-checks": {"get": {
                "summary": "This week's (or ?week=YYYY-Www) random spot-check sample: recording.spot_check_percent of each agent's sessions",
                "parameters": [{"name": "week", "in": "query", "schema": {"type": "string", "pattern": "^[0-9]{4}-W[0-9]{2}$"}}],
                "responses": {"200": _json(_OBJ), **_errors(400, 401, 403)},
            }},
            "/v1/recordings/{sid}": {
                "parameters": [_SID],
                "get": {"summary": "One session: index entry, files (from the manifest), evaluations, manifest check (audited as view)", "responses": {"200": _json(_OBJ), **_errors(400, 401, 403, 404)}},
                "delete": {"summary": "Delete a recording (compliance); refused under legal hold (409 legal_hold)", "responses": {"200": _json(_OBJ), **_errors(400, 401, 403, 404, 409)}},
            },
            "/v1/recordings/{sid}/timeline": {"parameters": [_SID], "get": {"summary": "The merged session timeline; t is seconds from the session start", "responses": {"200": _json(_OBJ), **_errors(401, 403, 404)}}},
            "/v1/recordings/{sid}/quality": {"parameters": [_SID], "get": {"summary": "The session's quality report (quality.json): levels, MOS, loss, alerts, tier changes", "responses": {"200": _json(_OBJ), **_errors(401, 403, 404)}}},
            "/v1/recordings/{sid}/transcript": {"parameters": [_SID], "get": {"summary": "The masked transcript (lines with speaker and times, risk cues, prompts played); 404 transcript_not_found", "responses": {"200": _json(_OBJ), **_errors(401, 403, 404)}}},
            "/v1/recordings/{sid}/transcript.vtt": {"parameters": [_SID], "get": {"summary": "The masked transcript as WebVTT, speakers as voice spans (audited as download)", "responses": {"200": {"description": "text/vtt", "content": {"text/vtt": {"schema": {"type": "string"}}}}, **_errors(401, 403, 404)}}},
            "/v1/recordings/{sid}/transcript/reveal": {"parameters": [_SID], "post": _action("Compliance opens the masked personal numbers of a transcript, with a reason; audited as reveal", 400, 401, 403, 404, body={"type": "object", "required": ["reason"], "properties": {"reason": {"type": "string", "maxLength": 500}}})},
            "/v1/recordings/{sid}/files/{name}": {
                "parameters": [_SID, {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}, {"name": "download", "in": "query", "schema": {"type": "string", "enum": ["1"]}}],
                "get": {"summary": "Stream one file (HTTP Range supported; ?access_token= for media elements); audited as play, or download with ?download=1", "responses": {"200": {"description": "The file"}, "206": {"description": "A byte range"}, **_errors(401, 403, 404, 416)}},
            },
            "/v1/recordings/{sid}/export": {"parameters": [_SID], "get": {"summary": "Every file of the session as one zip (audited as export)", "responses": {"200": {"description": "application/zip"}, **_errors(401, 403, 404)}}},
            "/v1/recordings/{sid}/legal-hold": {"parameters": [_SID], "put": _action("Set or lift a legal hold, with a reason (compliance); a held recording is never deleted", 400, 401, 403, 404, 409, body={"type": "object", "required": ["hold"], "properties": {"hold": {"type": "boolean"}, "reason": {"type": "string"}}})},
            "/v1/recordings/{sid}/evaluations": {"parameters": [_SID], "post": _action("Store a spot-check evaluation (scores 0-5 for greeting, identity_check, risk_disclosure, accuracy, courtesy; comments)", 400, 401, 403, 404, 409, body=_OBJ)},
            "/v1/recordings/{sid}/segments": {"parameters": [_SID], "post": {
                "summary": "A field device uploads a segment it recorded while offline (multipart: meta JSON, then file); merged into the session",
                "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {"type": "object", "properties": {"meta": {"type": "string"}, "file": {"type": "string", "format": "binary"}}}}}},
                "responses": {"201": _json(_OBJ), **_errors(400, 401, 403, 404, 413)},
            }},
            "/v1/recordings/{sid}/uploads": {"parameters": [_SID], "post": {
                "summary": "Declare a device segment to send resumably: meta (kind, codec, start_wall, participant_id, label, events) with size and sha256 (officer or service token of the session's room)",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object", "required": ["kind", "codec", "start_wall", "size", "sha256"], "properties": {
                    "kind": {"enum": ["audio", "video"]}, "codec": {"enum": ["vp8", "vp9", "h264", "opus"]}, "start_wall": {"type": "number"},
                    "participant_id": {"type": "string"}, "label": {"type": "string"}, "events": {"type": "array", "items": _OBJ},
                    "size": {"type": "integer", "minimum": 1}, "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"}}}}}},
                "responses": {"201": _json(_OBJ), **_errors(400, 401, 403, 404)},
            }},
            "/v1/recordings/{sid}/uploads/{upload}": {
                "parameters": [_SID, _UPLOAD],
                "get": {"summary": "How much of an upload the server holds (offset), and whether it is complete", "responses": {"200": _json(_OBJ), **_errors(401, 403, 404)}},
                "patch": {
                    "summary": "Append a chunk at the Upload-Offset header; the last chunk verifies sha256 and adds the segment to the recording (201). 409 offset_mismatch gives the server's offset; 422 checksum_mismatch discards the upload",
                    "parameters": [{"name": "Upload-Offset", "in": "header", "required": True, "schema": {"type": "integer", "minimum": 0}}],
                    "requestBody": {"required": True, "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
                    "responses": {"200": _json(_OBJ), "201": _json(_OBJ), **_errors(400, 401, 403, 404, 409, 413, 422)},
                },
            },
            "/v1/calls/{call}/identity": {"parameters": [_CALL], "get": {"summary": "The call's identity check (docs/identity.md): required, state (not_started, checking, passed, failed, overridden), satisfied, the live face state, the liveness attempt, evidence, comparison, override and risk cues (an agent in the call, or a supervisor)", "responses": {"200": _json(_OBJ), **_errors(401, 403, 404)}}},
            "/v1/calls/{call}/identity/liveness": {"parameters": [_CALL], "post": {**_action("Start a liveness challenge: one frontal, well-lit face, then 2-3 random actions prompted on the customer's screen; 409 liveness_running, 409 no_video, 503 liveness_unavailable", 401, 403, 404, 409, 503), "responses": {"202": _json(_OBJ), **_errors(401, 403, 404, 409, 503)}}},
            "/v1/calls/{call}/identity/capture": {"parameters": [_CALL], "post": {**_action("Capture the next full-resolution frame of the customer's video as evidence (an ID document, or a face), into the recording with time and who captured it", 400, 401, 403, 404, 409, 503, body={"type": "object", "properties": {"kind": {"enum": ["id_document", "face"]}}}), "responses": {"201": _json(_OBJ), **_errors(400, 401, 403, 404, 409, 503)}}},
            "/v1/calls/{call}/identity/evidence/{evidence}": {"parameters": [_CALL, _EVIDENCE], "get": {"summary": "An evidence frame as JPEG", "responses": {"200": {"description": "image/jpeg", "content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}}}, **_errors(401, 403, 404)}}},
            "/v1/calls/{call}/identity/compare": {"parameters": [_CALL], "post": _action("Compare the captured face with the ID-document frame through the configured backend (docs/face_compare.md): match, mismatch, manual_check_required or error, with the score; 409 evidence_missing", 401, 403, 404, 409)},
            "/v1/calls/{call}/identity/override": {"parameters": [_CALL], "post": _action("A manual override with a reason: unblocks the confirmation gate; written to the audit log and the timeline", 400, 401, 403, 404, 409, 503, body={"type": "object", "required": ["reason"], "properties": {"reason": {"type": "string", "minLength": 1, "maxLength": 500}}})},
            "/v1/dev/field": {"post": _action("Demo only (auth.dev_tokens): an officer's or a reviewer's token", 400, 403, body={"type": "object", "properties": {"role": {"enum": ["officer", "reviewer"]}, "name": {"type": "string"}}})},
            "/v1/field/sessions": {
                "get": {"summary": "Field visits: live first, then those ended within field.list_ended_s, with officer, customer, case, location, duration, link state, decision (reviewer, supervisor; an officer sees its own)", "responses": {"200": _json(_OBJ), **_errors(401, 403)}},
                "post": {"summary": "An officer starts a field visit for a customer and a case number; returns the room, the officer's token for it and the recording session id",
                         "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object", "required": ["customer_name", "case_number"], "properties": {
                             "customer_name": {"type": "string", "maxLength": 200}, "customer_id": {"type": "string", "maxLength": 64},
                             "case_number": {"type": "string", "maxLength": 64}, "note": {"type": "string", "maxLength": 2000}}}}}},
                         "responses": {"201": _json(_OBJ), **_errors(400, 401, 403)}},
            },
            "/v1/field/sessions/{field}": {"parameters": [_FIELD], "get": {"summary": "One field visit with its GPS track and snapshots", "responses": {"200": _json(_OBJ), **_errors(401, 403, 404)}}},
            "/v1/field/sessions/{field}/join": {"parameters": [_FIELD], "post": _action("A reviewer's token for the visit's room (reviewer, supervisor)", 401, 403, 404, 409)},
            "/v1/field/sessions/{field}/gps": {"parameters": [_FIELD], "post": {
                "summary": "A GPS fix from a device without a data channel (a WHIP body camera): checked, relayed to the room, kept in the timeline (the officer's token for the visit)",
                "requestBody": {"required": True, "content": {"application/json": {"schema": _FIX}}},
                "responses": {"202": _json(_FIX), **_errors(400, 401, 403, 404, 409)}}},
            "/v1/field/sessions/{field}/snapshots": {"parameters": [_FIELD], "post": _action("Evidence: a full-resolution frame of the officer's video, saved into the recording with time and GPS (reviewer, supervisor); 409 no_video, 409 room_not_local, 504 snapshot_timeout", 400, 401, 403, 404, 409, 504, body={"type": "object", "properties": {"participant_id": {"type": "string"}}})},
            "/v1/field/sessions/{field}/snapshots/{snapshot}": {"parameters": [_FIELD, _SNAPSHOT], "get": {"summary": "A snapshot as JPEG", "responses": {"200": {"description": "image/jpeg", "content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}}}, **_errors(401, 403, 404)}}},
            "/v1/field/sessions/{field}/decision": {"parameters": [_FIELD], "post": _action("Approve or reject the visit with notes (notes required to reject); into the timeline and the recording's outcome (reviewer, supervisor)", 400, 401, 403, 404, body={"type": "object", "required": ["decision"], "properties": {"decision": {"enum": ["approve", "reject"]}, "notes": {"type": "string", "maxLength": 2000}}})},
            "/v1/field/sessions/{field}/end": {"parameters": [_FIELD], "post": _action("End the visit (its officer, a reviewer or a supervisor): the room closes and the recording is finalised", 401, 403, 404)},
            "/v1/audit": {"get": {
                "summary": "Audit log entries, newest first (compliance; itself audited)",
                "parameters": [{"name": n, "in": "query", "schema": {"type": "string"}} for n in ("action", "target", "actor", "limit")],
                "responses": {"200": _json(_OBJ), **_errors(400, 401, 403)},
            }},
            "/metrics": {"get": {
                "summary": "Prometheus metrics of this process (text format); a bearer token when quality.metrics_token is set",
                "security": [],
                "responses": {"200": {"description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}}, **_errors(401)},
            }},
            "/v1/quality": {"get": {
                "summary": "Live quality of every session, worst first (supervisor or admin, every-room token)",
                "responses": {"200": _json({"type": "object", "properties": {"rooms": {"type": "array", "items": _OBJ}}}), **_errors(401, 403)},
            }},
            "/v1/rooms/{room}/quality": {
                "parameters": [_ROOM],
                "get": {
                    "summary": "Live quality of one session: level, MOS, alerts, per-participant figures (staff)",
                    "responses": {"200": _json(_OBJ), **_errors(401, 403, 404)},
                },
            },
            "/v1/speech": {"get": {"summary": "What speech this server offers: ASR on or off and its model, TTS languages, risk cues", "responses": {"200": _json(_OBJ), **_errors(401)}}},
            "/v1/speech/synthesize": {"get": {
                "summary": "WAV of a text in a language, for a page to play by itself (409 tts_unavailable without a voice)",
                "parameters": [{"name": "text", "in": "query", "required": True, "schema": {"type": "string", "maxLength": 600}}, {"name": "lang", "in": "query", "schema": {"type": "string"}}],
                "responses": {"200": {"description": "audio/wav", "content": {"audio/wav": {"schema": {"type": "string", "format": "binary"}}}}, **_errors(400, 401, 409)},
            }},
            "/v1/rooms/{room}/speech/say": {"parameters": [_ROOM], "post": _action(
                "Staff play a script line (risk_prompt, anti_fraud, identity_question with index) or their own text into the session through the voice participant; 202",
                400, 401, 403, 404, 409, 503,
                body={"type": "object", "properties": {"script": {"type": "string", "enum": ["risk_prompt", "anti_fraud", "identity_question"]}, "index": {"type": "integer"}, "business": {"type": "string"}, "text": {"type": "string"}, "language": {"type": "string"}}})},
            "/v1/rooms/{room}/speech/broadcast": {"parameters": [_ROOM], "post": _action(
                "The customer page has its text read aloud into the session (large-text mode); 202", 400, 401, 403, 404, 409, 503,
                body={"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}, "language": {"type": "string"}}})},
            "/v1/rooms/{room}/transcript": {"parameters": [_ROOM], "get": {"summary": "The live transcript of a session (masked) and its risk cues (staff)", "responses": {"200": _json(_OBJ), **_errors(401, 403)}}},
            "/v1/calls/{call}/finish": {"parameters": [_CALL], "post": _action(
                "The agent ends the call: the business's anti-fraud reminder plays first, then the call ends as with DELETE; the reply says whether it played",
                401, 403, 404, 409)},
            "/openapi.json": {"get": {"summary": "This document", "security": [], "responses": {"200": _json({"type": "object"})}}},
        },
    }


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(document())
