"""The images queue of `compute.mode: group`: every new image in the images bucket becomes one unit of work.

Cloud Storage publishes an OBJECT_FINALIZE notification for each image written to the images bucket to a
Pub/Sub topic; the workers of the group pull from one subscription of it. The subscription's backlog
(`num_undelivered_messages`) is what the group's autoscaler scales on (cnctl/cloud/group.py). Consuming
the subscription (ack only after the result is written, ack deadline extended during inference) is the
workers' pipeline, built by the host layers; this component only declares the queue and who may use it.
"""

from __future__ import annotations

from collections.abc import Sequence

import pulumi
import pulumiverse_time
from pulumi_gcp import projects, pubsub, storage

from cnctl.cloud.base import Component, Naming
from cnctl.cloud.identity import grant_name
from cnctl.config.schema import WorkerGroup

PUBSUB_API = "pubsub.googleapis.com"
PUBLISHER = "roles/pubsub.publisher"
SUBSCRIBER = "roles/pubsub.subscriber"
# What a bucket notification says: one message per image, when the object is complete (never a partial upload).
EVENT_TYPES = ["OBJECT_FINALIZE"]
PAYLOAD_FORMAT = "JSON_API_V1"
# Pub/Sub keeps an unacknowledged message at most 7 days; an image older than the bucket keeps it is gone anyway.
MAX_RETENTION_DAYS = 7
# Redelivery of a message a worker failed (nacked, or let its deadline pass) backs off between these, so
# an image that crashes workers does not hot-loop through the group until it is dead-lettered.
RETRY_BACKOFF = ("10s", "600s")
# Never expire: Pub/Sub deletes a subscription idle for 31 days by default, and a batch site (min 0) may be.
NEVER = ""
# How long a new grant is given to take effect before what needs it is created. "Access change propagation"
# (cloud.google.com/iam/docs/access-change-propagation): a policy change typically takes effect within 2 minutes;
# Cloud Storage refuses a notification whose agent cannot publish yet, and the provider's create does not retry.
GRANT_PROPAGATION = "120s"


def retention(image_retention_days: int) -> str:
    """How long an undelivered message is kept: as long as its image is, at most Pub/Sub's 7 days."""
    return f"{min(MAX_RETENTION_DAYS, image_retention_days) * 86400}s"


def subscription_filter(subscription: str) -> str:
    """The Cloud Monitoring filter of one subscription's metrics: what the autoscaler reads."""
    return f'resource.type = "pubsub_subscription" AND resource.labels.subscription_id = "{subscription}"'


class WorkQueue(Component):
    """Ensures the images topic and its bucket notification, the workers' subscription, and a dead-letter topic.

    - Cloud Storage's service agent of the project (service-<number>@gs-project-accounts) may publish on
      the images topic, and on nothing else. The notification is created `GRANT_PROPAGATION` after that
      grant (a `time.Sleep` between them, run again whenever the grant is made anew): Cloud Storage refuses a
      notification its agent cannot publish yet, so the first apply would otherwise fail on it.
    - The worker identity may pull from the work subscription only: not the topic, not the project, not
      the dead letters. Reading an image is its objectViewer on the images bucket (cnctl/cloud/identity.py).
    - After `maxDeliveryAttempts` deliveries a message goes to the dead-letter topic, kept on a
      subscription nobody pulls from automatically, for an operator to inspect. Dead-lettering is done by
      Pub/Sub's own service agent, which therefore needs publisher on the dead-letter topic and subscriber
      on the work subscription (to acknowledge the message it moved): those two grants exactly.
    - The ack deadline is the stack's (workers extend it while inference runs); the subscription never
      expires and keeps a message as long as its image lives.
    - Where the stack encrypts its buckets with a KMS key (`storage.kmsKeyName`), both topics store their
      messages (the images' names and metadata) under that key too; Pub/Sub's service agent needs
      roles/cloudkms.cryptoKeyEncrypterDecrypter on it (docs/cloud.md, "Customer-managed keys").
    - With `protect_data` (prod), both subscriptions carry Pulumi's `protect`: deleting or replacing one
      drops the messages it holds (the images waiting for a worker, the dead letters waiting for a person).
    """

    def __init__(
        self,
        names: Naming,
        project: str,
        images: storage.Bucket,
        image_retention_days: int,
        worker_email: pulumi.Input[str],
        group: WorkerGroup,
        kms_key_name: str | None = None,
        protect_data: bool = False,
        opts: pulumi.ResourceOptions | None = None,
        requires: Sequence[pulumi.Resource] = (),
    ) -> None:
        super().__init__("WorkQueue", names("work-queue"), opts, requires)
        keep_messages = pulumi.ResourceOptions.merge(self.child(), pulumi.ResourceOptions(protect=protect_data))
        labels = dict(names.labels)
        keep = retention(image_retention_days)
        # The Cloud Storage agent exists in every project with the Storage API; asking for it also creates it.
        gcs_agent = storage.get_project_service_account_output(
            project=project, opts=pulumi.InvokeOutputOptions(parent=self, depends_on=list(requires))
        )
        # Pub/Sub's agent, made to exist now (it otherwise appears with the first dead-lettered message).
        self.pubsub_agent = projects.ServiceIdentity(
            names("agent", "pubsub"), projects.ServiceIdentityArgs(project=project, service=PUBSUB_API), opts=self.child()
        )
        worker = pulumi.Output.concat("serviceAccount:", worker_email)

        self.topic = pubsub.Topic(
            names("images-queue"),
            pubsub.TopicArgs(name=names("images-queue"), project=project, labels=labels, kms_key_name=kms_key_name),
            opts=self.child(),
        )
        self.dead_letters = pubsub.Topic(
            names("images-dead"),
            pubsub.TopicArgs(name=names("images-dead"), project=project, labels=labels, kms_key_name=kms_key_name),
            opts=self.child(),
        )
        self.subscription = pubsub.Subscription(
            names("images-work"),
            pubsub.SubscriptionArgs(
                name=names("images-work"),
                project=project,
                topic=self.topic.id,
                ack_deadline_seconds=group.ack_deadline_seconds,
                message_retention_duration=keep,
                retain_acked_messages=False,
                expiration_policy=pubsub.SubscriptionExpirationPolicyArgs(ttl=NEVER),
                retry_policy=pubsub.SubscriptionRetryPolicyArgs(
                    minimum_backoff=RETRY_BACKOFF[0], maximum_backoff=RETRY_BACKOFF[1]
                ),
                dead_letter_policy=pubsub.SubscriptionDeadLetterPolicyArgs(
                    dead_letter_topic=self.dead_letters.id, max_delivery_attempts=group.max_delivery_attempts
                ),
                labels=labels,
            ),
            opts=keep_messages,
        )
        self.dead_letter_subscription = pubsub.Subscription(
            names("images-dead-inspect"),
            pubsub.SubscriptionArgs(
                name=names("images-dead-inspect"),
                project=project,
                topic=self.dead_letters.id,
                ack_deadline_seconds=group.ack_deadline_seconds,
                message_retention_duration=retention(MAX_RETENTION_DAYS),
                expiration_policy=pubsub.SubscriptionExpirationPolicyArgs(ttl=NEVER),
                labels=labels,
            ),
            opts=keep_messages,
        )

        publish = pubsub.TopicIAMMember(
            grant_name(names("agent", "storage"), PUBLISHER, "images-queue"),
            pubsub.TopicIAMMemberArgs(
                project=project, topic=self.topic.name, role=PUBLISHER, member=gcs_agent.member
            ),
            opts=self.child(),
        )
        self.grants: list[pulumi.Resource] = [
            publish,
            pubsub.SubscriptionIAMMember(
                grant_name(names("vm"), SUBSCRIBER, "images-work"),
                pubsub.SubscriptionIAMMemberArgs(
                    project=project, subscription=self.subscription.name, role=SUBSCRIBER, member=worker
                ),
                opts=self.child(),
            ),
            pubsub.TopicIAMMember(
                grant_name(names("agent", "pubsub"), PUBLISHER, "images-dead"),
                pubsub.TopicIAMMemberArgs(
                    project=project, topic=self.dead_letters.name, role=PUBLISHER, member=self.pubsub_agent.member
                ),
                opts=self.child(),
            ),
            pubsub.SubscriptionIAMMember(
                grant_name(names("agent", "pubsub"), SUBSCRIBER, "images-work"),
                pubsub.SubscriptionIAMMemberArgs(
                    project=project, subscription=self.subscription.name, role=SUBSCRIBER,
                    member=self.pubsub_agent.member,
                ),
                opts=self.child(),
            ),
        ]
        # Only a newly made grant waits: the Sleep is created with it, and made again when its member or topic changes.
        propagated = pulumiverse_time.Sleep(
            names("images-publish-propagated"),
            create_duration=GRANT_PROPAGATION,
            triggers={"member": gcs_agent.member, "topic": self.topic.id},
            opts=pulumi.ResourceOptions.merge(self.child(), pulumi.ResourceOptions(depends_on=[publish])),
        )
        self.notification = storage.Notification(
            names("images-notify"),
            storage.NotificationArgs(
                bucket=images.name,
                topic=self.topic.id,
                event_types=EVENT_TYPES,
                payload_format=PAYLOAD_FORMAT,
            ),
            opts=pulumi.ResourceOptions.merge(self.child(), pulumi.ResourceOptions(depends_on=[propagated])),
        )
        self.register_outputs(
            {
                "topic": self.topic.name,
                "subscription": self.subscription.name,
                "deadLetterTopic": self.dead_letters.name,
                "deadLetterSubscription": self.dead_letter_subscription.name,
            }
        )
