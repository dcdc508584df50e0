#!/usr/bin/env python3
"""A model of Vault for scripts/check-deploy.py: the `vault` CLI and, through a stub `curl`, the HTTP API.

Not a fake that says yes: it keeps the behaviours deploy/vault/ depends on, each from Vault's source:
  - a token's policies are looked up in the policy store on every request, so a policy rewritten by a
    token applies to that same token at once (vault/request_handling.go fetchACLTokenEntryAndEntity ->
    vault/policy_store.go PolicyStore.ACL; SetPolicy refreshes the cache; only root and
    response-wrapping are immutable, `default` is not);
  - path rules: an exact path beats a glob, the longest glob prefix wins, deny wins within a path
    (vault/acl.go NewACL, AllowOperation); a write is `create` when the object is absent, else `update`
    (ExistenceCheck); templated paths that do not render are skipped (vault/policy.go parsePaths);
  - role writes merge into the stored role: fields absent from the request keep their value
    (vault-plugin-auth-jwt path_role.go pathRoleCreateUpdate, vault-plugin-auth-kubernetes path_role.go);
  - revoke-self is an ordinary ACL-checked path that only the `default` policy grants
    (vault/token_store.go revoke-self; vault/policy_store.go defaultPolicy), and a role's
    token_no_default_policy leaves `default` out (sdk/helper/tokenutil, vault/request_handling.go);
  - JWT login checks bound_audiences and bound_claims (glob: `*` spans `/`) and copies claim_mappings
    into the alias metadata that templated policies read (vault-plugin-auth-jwt path_login.go, claims.go).

State lives in the JSON file $VAULT_MODEL_STATE; each request is appended to $STUB_LOG.
    vault_model.py init                 fresh Vault with a root token "root"
    vault_model.py vault ARGS...        the CLI subset the scripts use (token from $VAULT_TOKEN)
    vault_model.py curl ARGS...         curl for /v1/ paths and the Actions OIDC token endpoint
"""
from __future__ import annotations

import base64
import fnmatch
import json
import os
import re
import sys

DEFAULT_POLICY = """
path "auth/token/lookup-self" { capabilities = ["read"] }
path "auth/token/renew-self" { capabilities = ["update"] }
path "auth/token/revoke-self" { capabilities = ["update"] }
path "sys/capabilities-self" { capabilities = ["update"] }
path "cubbyhole/*" { capabilities = ["create", "read", "update", "delete", "list"] }
"""
JWT_ACCESSOR = "auth_jwt_5e1f2a"


class Denied(Exception):
    """Vault answered 403."""


class Missing(Exception):
    """Vault answered 404 or 400."""


def load() -> dict:
    with open(os.environ["VAULT_MODEL_STATE"]) as f:
        return json.load(f)


def save(state: dict) -> None:
    with open(os.environ["VAULT_MODEL_STATE"], "w") as f:
        json.dump(state, f, indent=1, sort_keys=True)


def log(line: str) -> None:
    if os.environ.get("STUB_LOG"):
        with open(os.environ["STUB_LOG"], "a") as f:
            f.write(line + "\n")


def fresh() -> dict:
    return {"policies": {"default": DEFAULT_POLICY}, "mounts": {}, "auth": {}, "audit": {}, "config": {},
            "roles": {"jwt": {}, "kubernetes": {}}, "kv": {}, "tokens": {"root": {"policies": ["root"], "meta": {}}}}


def policy_paths(raw: str) -> list[tuple[str, set]]:
    """`path "P" { capabilities = [...] }` blocks. A regex, not HCL: python-hcl2 takes longer to import
    than a request may (the scripts make dozens), and the policies here use nothing else."""
    text = re.sub(r"#[^\n]*", "", raw)
    return [(m.group(1), set(re.findall(r'"([^"]+)"', m.group(2))))
            for m in re.finditer(r'path\s+"([^"]+)"\s*\{\s*capabilities\s*=\s*\[([^\]]*)\]\s*\}', text)]


def rules(state: dict, token: dict) -> dict[str, set]:
    """The token's ACL, built from the policy store now (not when the token was made)."""
    merged: dict[str, set] = {}
    for name in token["policies"]:
        raw = state["policies"].get(name)
        if raw is None:
            continue
        for path, caps in policy_paths(raw):
            ok = True

            def render(m: re.Match) -> str:
                nonlocal ok
                value = token["meta"].get(m.group(2)) if m.group(1) == JWT_ACCESSOR else None
                ok = ok and value is not None
                return value or ""
            path = re.sub(r"\{\{identity\.entity\.aliases\.([^.]+)\.metadata\.([^}]+)\}\}", render, path)
            if not ok:
                continue
            caps = merged.setdefault(path, set()) | caps
            merged[path] = {"deny"} if "deny" in caps else caps
    return merged


def capabilities(state: dict, token: dict, path: str) -> set:
    if "root" in token["policies"]:
        return {"root"}
    acl = rules(state, token)
    if path in acl:
        return acl[path]
    # Longest glob prefix; `+` matches one segment.
    best, best_len = set(), -1
    for pattern, caps in acl.items():
        regex = "".join("[^/]+" if part == "+" else re.escape(part) for part in re.split(r"(\+)", pattern.rstrip("*")))
        if re.fullmatch(regex + (".*" if pattern.endswith("*") else ""), path) and len(pattern) > best_len:
            best, best_len = caps, len(pattern)
    return best


def authorize(state: dict, token_id: str | None, path: str, op: str, sudo: bool = False) -> dict:
    token = state["tokens"].get(token_id or "")
    if token is None:
        raise Denied(f"{path}: invalid token")
    caps = capabilities(state, token, path)
    if "root" in caps:
        return token
    if "deny" in caps or op not in caps or (sudo and "sudo" not in caps):
        log(f"DENIED {op} {path}")
        raise Denied(f"{op} {path}: permission denied")
    return token


def exists(state: dict, path: str) -> bool:
    if path.startswith("sys/policies/acl/"):
        return path.split("/", 3)[3] in state["policies"]
    m = re.fullmatch(r"auth/(jwt|kubernetes)/role/(.+)", path)
    if m:
        return m.group(2) in state["roles"][m.group(1)]
    if path.startswith("ci/data/"):
        return path[len("ci/data/"):] in state["kv"]
    return True


def glob_match(pattern: str, value: str) -> bool:
    # go-glob (used by bound_claims_type=glob): only `*`, and it spans `/`.
    return fnmatch.fnmatchcase(value, pattern.replace("[", "[[]").replace("?", "[?]"))


def login(state: dict, method: str, role_name: str, claims: dict) -> str:
    role = state["roles"][method].get(role_name)
    if role is None:
        raise Missing(f'role "{role_name}" could not be found')
    if method == "jwt":
        if claims.get("aud") not in role.get("bound_audiences", []):
            raise Denied("aud claim does not match any bound audience")
        for claim, wanted in role.get("bound_claims", {}).items():
            wanted = wanted if isinstance(wanted, list) else [wanted]
            got = str(claims.get(claim, ""))
            match = glob_match if role.get("bound_claims_type") == "glob" else str.__eq__
            if not any(match(w, got) for w in wanted):
                raise Denied(f"claim {claim!r} does not match any associated bound claim values")
        meta = {meta_key: str(claims[c]) for c, meta_key in role.get("claim_mappings", {}).items() if c in claims}
    else:
        if claims.get("serviceaccount") not in role.get("bound_service_account_names", []) \
                or claims.get("namespace") not in role.get("bound_service_account_namespaces", []):
            raise Denied("service account name not authorized")
        if role.get("audience") and claims.get("aud") != role["audience"]:
            raise Denied("invalid audience (aud) claim")
        meta = {}
    policies = list(role.get("token_policies", []))
    if not role.get("token_no_default_policy"):
        policies.append("default")
    token_id = f"hvs.{method}.{role_name}.{len(state['tokens'])}"
    state["tokens"][token_id] = {"policies": policies, "meta": meta, "role": role_name}
    log(f"login {method}/{role_name} -> {token_id} policies={','.join(policies)}")
    return token_id


def request(state: dict, token_id: str | None, op: str, path: str, data: dict | None = None):
    """One API request: authorize against the current policy store, then act. Returns the response data."""
    path = path.strip("/")
    log(f"{op} {path} {json.dumps(data, sort_keys=True) if data else ''}".rstrip())
    m = re.fullmatch(r"auth/(jwt|kubernetes)/login", path)
    if m:
        return {"auth": {"client_token": login(state, m.group(1), data["role"], decode_jwt(data["jwt"]))}}
    if op == "write":
        op = "create" if not exists(state, path) else "update"
    sudo = path.startswith(("sys/auth/", "sys/audit/")) or path == "sys/audit"
    token = authorize(state, token_id, path, op, sudo=sudo and op != "read")
    if path == "auth/token/revoke-self":
        del state["tokens"][token_id]
        return {}
    if path == "auth/token/lookup-self":
        return {"data": {"policies": token["policies"]}}
    if path.startswith("sys/policies/acl"):
        name = path[len("sys/policies/acl/"):]
        if op == "list":
            return {"data": {"keys": sorted(state["policies"])}}
        if op == "read":
            if name not in state["policies"]:
                raise Missing(path)
            return {"data": {"name": name, "policy": state["policies"][name]}}
        if op == "delete":
            if name in ("default", "root"):
                raise Missing(f"cannot delete {name} policy")
            state["policies"].pop(name, None)
            return {}
        if name == "root":
            raise Missing("cannot update root policy")
        state["policies"][name] = data["policy"]
        return {}
    m = re.fullmatch(r"auth/(jwt|kubernetes)/role/?(.*)", path)
    if m:
        kind, name = m.group(1), m.group(2)
        if op == "list":
            return {"data": {"keys": sorted(state["roles"][kind])}}
        if op == "read":
            if name not in state["roles"][kind]:
                raise Missing(path)
            return {"data": state["roles"][kind][name]}
        if op == "delete":
            state["roles"][kind].pop(name, None)
            return {}
        # Merge: the stored role keeps every field this request does not name.
        state["roles"][kind].setdefault(name, {}).update(data)
        return {}
    if path.startswith("ci/data/"):
        key = path[len("ci/data/"):]
        if op == "read":
            if key not in state["kv"]:
                raise Missing(path)
            return {"data": {"data": state["kv"][key], "metadata": {}}}
        state["kv"][key] = data["data"]
        return {"data": {"version": 1}}
    if path.startswith("sys/auth/"):
        name = path[len("sys/auth/"):]
        if op == "read":
            if name not in state["auth"]:
                raise Missing(path)
            return {"data": {"accessor": state["auth"][name]["accessor"]}}
        state["auth"][name] = {"accessor": JWT_ACCESSOR if name == "jwt" else f"auth_{name}_0"}
        return {}
    if path.startswith("sys/mounts/") or path == "sys/audit" or path.startswith("sys/audit/"):
        table = "mounts" if path.startswith("sys/mounts") else "audit"
        name = path.rsplit("/", 1)[-1]
        if op == "read":
            if path == "sys/audit":
                return {"data": {f"{k}/": {} for k in state["audit"]}}
            if name not in state[table]:
                raise Missing(path)
            return {"data": state[table][name]}
        state[table][name] = data or {}
        return {}
    if path in ("auth/jwt/config", "auth/kubernetes/config"):
        if op == "read":
            return {"data": state["config"].get(path, {})}
        state["config"].setdefault(path, {}).update(data)
        return {}
    if path == "sys/storage/raft/snapshot":
        return {"snapshot": "raft-snapshot-bytes"}
    if path == "sys/capabilities-self":
        return {"data": {"capabilities": sorted(capabilities(state, token, data["path"]))}}
    raise Missing(f"no handler for {path}")


def decode_jwt(jwt: str) -> dict:
    """The model's OIDC and service-account tokens are `model.<base64 JSON claims>`."""
    try:
        return json.loads(base64.b64decode(jwt.split(".", 1)[1]))
    except (IndexError, ValueError) as e:
        raise Denied(f"malformed jwt: {e}") from e


def encode_jwt(claims: dict) -> str:
    return "model." + base64.b64encode(json.dumps(claims).encode()).decode()


def cli_args(args: list[str]) -> tuple[dict, list[str]]:
    flags, rest = {}, []
    for a in args:
        m = re.fullmatch(r"-(field|format|path|version|description)=(.*)", a)
        if m:
            flags[m.group(1)] = m.group(2)
        else:
            rest.append(a)
    return flags, rest


def kv_pairs(items: list[str]) -> dict:
    data: dict = {}
    for item in items:
        if item.startswith("@"):
            with open(item[1:]) as f:
                data.update(json.load(f))
            continue
        k, _, v = item.partition("=")
        if v == "-":
            v = sys.stdin.read()
        elif v.startswith("@"):
            with open(v[1:]) as f:
                v = f.read()
        data[k] = v
    return data


def cli_output(flags: dict, resp: dict) -> None:
    body = resp.get("data", resp.get("auth", {}))
    if "field" in flags:
        value = body.get(flags["field"], resp.get("auth", {}).get("client_token") if flags["field"] == "token" else None)
        if value is None:
            raise Missing(f'field "{flags["field"]}" not present')
        print(value if isinstance(value, str) else json.dumps(value))
    elif flags.get("format") == "json":
        print(json.dumps(body.get("keys", body) if "keys" in body else {"data": body}, indent=2))


def vault_cli(args: list[str]) -> int:
    state = load()
    token = os.environ.get("VAULT_TOKEN")
    flags, rest = cli_args(args)
    cmd = rest[:2]
    try:
        if cmd == ["token", "lookup"]:
            request(state, token, "read", "auth/token/lookup-self")
        elif cmd == ["token", "capabilities"]:
            print(", ".join(request(state, token, "update", "sys/capabilities-self", {"path": rest[2]})["data"]["capabilities"]) or "deny")
        elif cmd == ["token", "revoke"] and rest[2:] == ["-self"]:
            request(state, token, "update", "auth/token/revoke-self")
        elif cmd == ["operator", "raft"] and rest[2] == "snapshot" and rest[3] == "save":
            request(state, token, "read", "sys/storage/raft/snapshot")
            with open(rest[4], "w") as f:
                f.write("raft-snapshot-bytes")
        elif cmd == ["operator", "raft"] and rest[3] == "inspect":
            return 0 if os.path.getsize(rest[4]) > 0 else 2
        elif cmd == ["secrets", "enable"]:
            request(state, token, "write", f"sys/mounts/{flags['path']}", {"type": rest[2]})
        elif cmd == ["auth", "enable"]:
            request(state, token, "write", f"sys/auth/{flags['path']}", {"type": rest[2]})
        elif cmd == ["audit", "enable"]:
            request(state, token, "write", f"sys/audit/{rest[2]}", kv_pairs(rest[3:]))
        elif cmd == ["policy", "write"]:
            text = sys.stdin.read() if rest[3] == "-" else open(rest[3]).read()
            request(state, token, "write", f"sys/policies/acl/{rest[2]}", {"policy": text})
        elif rest[0] == "read":
            cli_output(flags, request(state, token, "read", rest[1]))
        elif rest[0] == "list":
            cli_output(dict(flags, format="json"), request(state, token, "list", rest[1]))
        elif rest[0] == "delete":
            request(state, token, "delete", rest[1])
        elif rest[0] == "write":
            cli_output(flags, request(state, token, "write", rest[1], kv_pairs(rest[2:])))
        else:
            print(f"vault model: unsupported command {args}", file=sys.stderr)
            return 2
    except Denied as e:
        save(state)
        print(f"Error: Code: 403. Errors:\n* permission denied ({e})", file=sys.stderr)
        return 2
    except Missing as e:
        save(state)
        print(f"Error: Code: 404. Errors:\n* {e}", file=sys.stderr)
        return 2
    save(state)
    return 0


def curl(args: list[str]) -> int:
    url = data = token = method = None
    fail = False
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("--data", "-d"):
            data, i = args[i + 1], i + 2
        elif a == "-H":
            m = re.fullmatch(r"X-Vault-Token:\s*(.*)", args[i + 1])
            token = m.group(1) if m else token
            i += 2
        elif a == "-X":
            method, i = args[i + 1], i + 2
        elif a in ("--cacert", "--retry"):
            i += 2
        elif a.startswith("-"):
            fail = fail or a in ("--fail", "--fail-with-body", "-f")
            i += 1
        else:
            url, i = a, i + 1
    if "audience=" in url:
        claims = dict(json.loads(os.environ["STUB_CLAIMS"]), aud=url.rsplit("audience=", 1)[1])
        print(json.dumps({"value": encode_jwt(claims)}))
        return 0
    path = url.split("/v1/", 1)[1]
    body = json.loads(data) if data else None
    op = "write" if (method == "POST" or body is not None) else "read"
    state = load()
    try:
        resp = request(state, token, op, path, body)
    except Denied as e:
        save(state)
        print(json.dumps({"errors": [f"permission denied: {e}"]}))
        return 22 if fail else 0
    except Missing as e:
        save(state)
        print(json.dumps({"errors": [str(e)]}))
        return 22 if fail else 0
    save(state)
    print(json.dumps(resp))
    return 0


def main() -> int:
    what, args = sys.argv[1], sys.argv[2:]
    if what == "init":
        save(fresh())
        return 0
    return {"vault": vault_cli, "curl": curl}[what](args)


if __name__ == "__main__":
    sys.exit(main())
