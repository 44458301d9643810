"""The verification page: server-rendered HTML, no script at all, Chinese first with English
beside it (the people who check a rider's badge are employers and other cities' offices)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from html import escape
from typing import Any

_BEIJING = timezone(timedelta(hours=8))

VERDICTS = {
    # verdict: (Chinese, English, colour, what it means)
    "VALID": ("有效", "Valid", "#1b7f3b",
              "由本市签发，内容未被改动，在有效期内，且未被撤销。"),
    "REVOKED": ("已撤销", "Revoked", "#b3261e", "签名无误，但签发机构已撤销这枚徽章。"),
    "EXPIRED": ("已过期", "Expired", "#8a5a00", "签名无误，但徽章已过有效期。"),
    "TAMPERED": ("被篡改", "Tampered", "#b3261e",
                 "签名与内容不符：证书在签发后被改动过，或并非由所示机构签发。"),
    "UNKNOWN_KEY": ("非本市签发", "Not issued here", "#b3261e",
                    "证书所用的签名密钥不属于本市的签发机构。"),
    "NOT_YET_VALID": ("尚未生效", "Not yet valid", "#8a5a00", "证书的生效时间还未到。"),
    "UNKNOWN_AWARD": ("查无此证", "Unknown award", "#b3261e",
                      "签名属于本市，但本市没有这枚徽章的授予记录。"),
}

_STYLE = """
body{font-family:"WenQuanYi Micro Hei","Noto Sans CJK SC","PingFang SC","Microsoft YaHei",
sans-serif;margin:0;background:#f5f6f8;color:#1c1c1c}
header{background:#8c1c13;color:#fff;padding:16px 24px}
header h1{margin:0;font-size:22px}header p{margin:4px 0 0;opacity:.85;font-size:14px}
main{max-width:820px;margin:24px auto;padding:0 16px}
.card{background:#fff;border-radius:8px;padding:20px 24px;margin-bottom:16px;
box-shadow:0 1px 3px rgba(0,0,0,.12)}
textarea{width:100%;box-sizing:border-box;height:140px;font-family:monospace;font-size:12px}
button{background:#8c1c13;color:#fff;border:0;border-radius:4px;padding:10px 22px;
font-size:16px;cursor:pointer}
.verdict{display:inline-block;color:#fff;border-radius:6px;padding:8px 18px;font-size:24px;
font-weight:bold}
.badge{display:flex;gap:20px;align-items:center}.badge img{width:120px;height:120px}
dl{display:grid;grid-template-columns:9em 1fr;gap:6px 12px;margin:12px 0 0}
dt{color:#666}dd{margin:0;word-break:break-all}
.problems li,.alert{color:#b3261e}.en{color:#666;font-size:.85em}
code{font-size:12px;word-break:break-all}
"""


def _beijing(iso: str) -> str:
    """A credential's time as a reader in the city reads it (UTC+8), with the UTC original."""
    try:
        at = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return iso
    if at.tzinfo is None:
        return iso
    local = at.astimezone(_BEIJING)
    return f"{local:%Y-%m-%d %H:%M}（北京时间）  {iso}"


def _page(title: str, body: str) -> str:
    return f"""<!DOCTYPE html>
<html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title><style>{_STYLE}</style></head>
<body><header><h1>骑迹 · 徽章证书核验</h1>
<p>Qiji credential verification — Open Badges 3.0</p></header>
<main>{body}</main></body></html>"""


def form(jwt: str = "", error: str = "") -> str:
    problem = (f'<p class="alert" role="alert"><strong>无法核验 Cannot check:</strong> '
               f"{escape(error)}</p>") if error else ""
    return _page("徽章证书核验 Verify a credential", f"""
<div class="card"><h2>核验一枚徽章证书 <span class="en">Verify a credential</span></h2>
<p>粘贴骑手出示的证书（VC-JWT，形如 <code>eyJ…</code> 的三段文本），点击“核验”。
<br><span class="en">Paste the credential the rider showed you (a VC-JWT) and press Verify.
Nothing is stored.</span></p>
{problem}
<form method="post" action="verify">
<textarea name="credential" aria-label="credential" required>{escape(jwt)}</textarea>
<p><button type="submit">核验 Verify</button></p></form>
<p class="en">Machines: <code>POST /api/verify</code> with the JWT as the body; keys at
<code>/.well-known/jwks.json</code>.</p></div>""")


def result(outcome: dict[str, Any], image_url: str) -> str:
    verdict = outcome["verdict"]
    zh, en, colour, meaning = VERDICTS.get(verdict, (verdict, verdict, "#555", ""))
    credential = outcome.get("credential") or {}
    achievement = (credential.get("credentialSubject") or {}).get("achievement") or {}
    issuer = credential.get("issuer") or {}
    issuer_name = issuer.get("name", "") if isinstance(issuer, dict) else ""
    issuer_id = issuer.get("id", "") if isinstance(issuer, dict) else str(issuer)
    criteria = (achievement.get("criteria") or {}).get("narrative", "")
    rows = [("徽章 Badge", achievement.get("name", "")),
            ("说明 About", achievement.get("description", "")),
            ("授予条件 Criteria", criteria),
            ("签发机构 Issuer", issuer_name),
            ("机构标识 Issuer id", issuer_id),
            ("生效 Valid from", _beijing(credential.get("validFrom", ""))),
            ("到期 Valid until", _beijing(credential.get("validUntil", "")) or "长期有效 no expiry"
             if credential else ""),
            ("证书编号 Credential", credential.get("id", ""))]
    details = "".join(f"<dt>{escape(k)}</dt><dd>{escape(str(v))}</dd>" for k, v in rows if v)
    picture = (f'<img src="{escape(image_url)}" alt="{escape(achievement.get("name", ""))}">'
               if image_url else "")
    problems = "".join(f"<li>{escape(p)}</li>" for p in outcome.get("problems", []))
    shown = ("<p class=\"en\">The details below are what the credential says; they are shown "
             "because its signature verified.</p>") if credential else (
        "<p class=\"en\">Its contents are not shown: nothing in it can be trusted.</p>")
    return _page(f"{zh} {en} — 徽章证书核验", f"""
<div class="card" data-verdict="{escape(verdict)}">
<span class="verdict" style="background:{colour}">{escape(zh)} · {escape(en)}</span>
<p>{escape(meaning)}</p>
{f'<ul class="problems">{problems}</ul>' if problems else ""}
{shown}
<div class="badge">{picture}<dl>{details}</dl></div></div>
<p><a href="verify">再核验一枚 Verify another</a></p>""")
