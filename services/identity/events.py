"""identity's published event contract for other Qiji services: the topics they may follow.

Other services match these strings, never identity's classes; a test keeps them equal to the
classes' topics, so moving a class without `register_topic` fails the build."""

RIDER_REGISTERED = "services.identity.domain.model:Rider.Registered"
RIDER_VERIFIED = "services.identity.domain.model:Rider.Verified"
RIDER_SUSPENDED = "services.identity.domain.model:Rider.Suspended"
RIDER_REINSTATED = "services.identity.domain.model:Rider.Reinstated"
RIDER_LEFT = "services.identity.domain.model:Rider.Left"
# The rider's personal data was erased (crypto-shredding): a service that seals something of
# the rider under its own key (governance's help requests) destroys that key too.
RIDER_PERSONAL_DATA_ERASED = "services.identity.domain.model:Rider.PersonalDataErased"
ORGANISATION_CREATED = "services.identity.domain.model:Organisation.Created"
SERVICE_SPACE_OPENED = "services.identity.domain.model:ServiceSpace.Opened"
SERVICE_SPACE_FACILITIES_UPDATED = "services.identity.domain.model:ServiceSpace.FacilitiesUpdated"
# A space's name, street, amenities, opening hours and location (a `location` key, WGS-84
# {"latitude", "longitude"}, from class_version 2 on: absent in older events, None when not
# given or, in FacilitiesUpdated, not changed).
SERVICE_SPACE_TOPICS = (SERVICE_SPACE_OPENED, SERVICE_SPACE_FACILITIES_UPDATED)

RIDER_STATUS_TOPICS = (RIDER_REGISTERED, RIDER_VERIFIED, RIDER_SUSPENDED, RIDER_REINSTATED,
                       RIDER_LEFT)


def rider_flags_after(topic: str, verified: bool, suspended: bool, left: bool
                      ) -> tuple[bool, bool, bool]:
    """How a rider-status event changes what a follower knows: (verified, suspended, left).
    A rider is active when verified and neither suspended nor gone."""
    if topic == RIDER_VERIFIED:
        verified = True
    elif topic == RIDER_SUSPENDED:
        suspended = True
    elif topic == RIDER_REINSTATED:
        suspended = False
    elif topic == RIDER_LEFT:
        left = True
    return verified, suspended, left
