"""merchants' published contract for other Qiji services: the topics a rider's own record
(identity's RiderRecords) follows, and how a claim's code is made from its stored nonce.
Other services match these strings, never merchants' classes; a test keeps them equal to the
classes' topics.

CLAIM_ISSUED carries `perk_id`, `merchant_id`, `rider_id`, `code_nonce`, `claimed_at`,
`expires_at`; CLAIM_REDEEMED and CLAIM_REVERSED carry `at`; the claim is the originator of each.
PERK_CREATED carries `merchant_id` and `title`; MERCHANT_APPLIED `name`, `street_id` and
from v3 on `business_area_id` (the merchant is the originator; see the standing topics
below); CAMPAIGN_LAUNCHED `street_id` and `name`; PACKAGE_ALLOCATED `rider_id` and `at`,
PACKAGE_HANDED_OVER `rider_id` and `at` (the campaign is the originator); from
CAMPAIGN_LAUNCHED v2 on also `contents` ([{"item", "quantity"}]), `rules` and `rules_version`.
CARE_DONATION_RECORDED carries `donation_id`, `sponsor_id` (an organisation identity knows),
`packages`, `items` ([{"item", "quantity"}]), `recorded_by` and `at`: what a partner register
links to "what they gave"."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from shared import auth

MERCHANT_APPLIED = "services.merchants.domain.model:Merchant.Applied"
PERK_CREATED = "services.merchants.domain.model:PerkOffer.Created"
# identity's partner register follows a perk's life (the perk is the originator; none carries
# more): a draft is the merchant's own, a published one is what it offered.
PERK_PUBLISHED = "services.merchants.domain.model:PerkOffer.Published"
PERK_PAUSED = "services.merchants.domain.model:PerkOffer.Paused"
PERK_WITHDRAWN = "services.merchants.domain.model:PerkOffer.Withdrawn"
# A merchant's standing (the merchant is the originator; MERCHANT_APPLIED carries `street_id`
# and `name`, and from its v3 on `business_area_id` — "" for none, and for every v1/v2 event,
# which the class's upcasters read so; MERCHANT_BUSINESS_AREA_NAMED carries
# `business_area_id`, the area of its street it is in now; the others nothing a follower
# needs): identity's friendly marks count the approved friendly merchants of a street (a
# community) or of a business area (商圈).
MERCHANT_APPROVED = "services.merchants.domain.model:Merchant.Approved"
MERCHANT_REJECTED = "services.merchants.domain.model:Merchant.Rejected"
MERCHANT_SUSPENDED = "services.merchants.domain.model:Merchant.Suspended"
MERCHANT_REINSTATED = "services.merchants.domain.model:Merchant.Reinstated"
MERCHANT_BUSINESS_AREA_NAMED = "services.merchants.domain.model:Merchant.BusinessAreaNamed"
MERCHANT_STANDING_TOPICS = (MERCHANT_APPLIED, MERCHANT_APPROVED, MERCHANT_REJECTED,
                            MERCHANT_SUSPENDED, MERCHANT_REINSTATED,
                            MERCHANT_BUSINESS_AREA_NAMED)
CLAIM_ISSUED = "services.merchants.domain.model:Claim.Issued"
CLAIM_REDEEMED = "services.merchants.domain.model:Claim.Redeemed"
CLAIM_REVERSED = "services.merchants.domain.model:Claim.Reversed"
CLAIM_LAPSED = "services.merchants.domain.model:Claim.Lapsed"
CLAIM_FROZEN = "services.merchants.domain.model:Claim.Frozen"
CLAIM_UNFROZEN = "services.merchants.domain.model:Claim.Unfrozen"
CLAIM_TOPICS = (CLAIM_ISSUED, CLAIM_REDEEMED, CLAIM_REVERSED, CLAIM_LAPSED, CLAIM_FROZEN,
                CLAIM_UNFROZEN)
CAMPAIGN_LAUNCHED = "services.merchants.domain.model:CareCampaign.Launched"
PACKAGE_ALLOCATED = "services.merchants.domain.model:CareCampaign.PackageAllocated"
PACKAGE_HANDED_OVER = "services.merchants.domain.model:CareCampaign.PackageHandedOver"
CARE_TOPICS = (CAMPAIGN_LAUNCHED, PACKAGE_ALLOCATED, PACKAGE_HANDED_OVER)
# Not a rider's: the sponsors' side of a campaign (a partner register follows it).
CARE_DONATION_RECORDED = "services.merchants.domain.model:CareCampaign.DonationRecorded"

# A code is the rider's, a bearer secret: shown to their platform and to the officials who hand
# codes out at a counter, never to a merchant (who must be shown it by the rider) nor to an
# auditor — wherever a claim is shown (merchants' GetClaim, a rider's record).
SEES_CODES = frozenset({auth.PLATFORM, auth.STREET_OFFICE, auth.CITY_ADMIN})

# Crockford's base32: no I, L, O or U, so a code read aloud or typed at a till survives.
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
CODE_LENGTH = 16  # 80 bits: unguessable, and short enough to type


class CodeMinter:
    """Makes redemption codes. A code is an HMAC (under a key derived from the master key) of a
    random nonce; only the nonce and the code's digest are stored, so someone reading the
    database can neither see nor forge a code, and a retried claim gets the same code back."""

    def __init__(self, master_key: bytes):
        self._key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                         info=b"qiji-merchants-claim-codes").derive(master_key)

    def code(self, nonce: str) -> str:
        mac = hmac.new(self._key, bytes.fromhex(nonce), hashlib.sha256).digest()[:10]
        raw = base64.b32encode(mac).decode()
        return raw.translate(str.maketrans(_B32, CROCKFORD))

    @staticmethod
    def new_nonce() -> str:
        return os.urandom(16).hex()

    @staticmethod
    def normalise(code: str) -> str:
        """What a merchant typed, as the canonical code: case, spaces and dashes ignored, and
        the letters Crockford's alphabet leaves out read as the digits they look like."""
        text = code.upper().replace("-", "").replace(" ", "")
        return text.translate(str.maketrans("ILO", "110"))

    @staticmethod
    def digest(code: str) -> str:
        return hashlib.sha256(code.encode()).hexdigest()

    @staticmethod
    def display(code: str) -> str:
        return "-".join(code[i:i + 4] for i in range(0, len(code), 4))
