"""Metrics, alarms and backlog scaling of the services.

- The relay serves Prometheus metrics on 127.0.0.1 inside its task; an AWS Distro for OpenTelemetry
  (ADOT) collector in the same task (awsvpc: one network namespace, so localhost is shared) scrapes them
  and writes them to CloudWatch as embedded metric format logs: metrics in namespace `txoutbox`, dimension
  `Service`. Nothing outside the task can reach the metrics port.
- The consumer side is watched through SQS's own CloudWatch metrics: the dead-letter queue's depth and
  the age of the oldest message in the queue.
- Alarms notify an SNS topic (context `alarmEmail` subscribes an address to it).
"""

from __future__ import annotations

import json
from typing import Any

from aws_cdk import Duration
from aws_cdk import aws_applicationautoscaling as appscaling
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from stacks.base_stack import BaseStack

NAMESPACE = "txoutbox"
# The ADOT collector image (context `adotImage` overrides it).
ADOT_IMAGE = "public.ecr.aws/aws-observability/aws-otel-collector:v0.40.0"
SCRAPE_SECONDS = 30
# The relay's gauges exported to CloudWatch (txoutbox.metrics); the counters and histograms stay in
# Prometheus form for whoever scrapes the relay directly.
EXPORTED_METRICS = [
    "txoutbox_backlog",
    "txoutbox_oldest_event_age_seconds",
    "txoutbox_circuit_state",
    "txoutbox_dead_letters",
]

OLDEST_EVENT_AGE_ALARM_SECONDS = 300
QUEUE_AGE_ALARM_SECONDS = 300


def collector_config(*, scrape_port: int, service: str, log_group_name: str) -> str:
    """The ADOT collector's configuration (JSON is YAML): Prometheus on localhost -> CloudWatch EMF."""
    config: dict[str, Any] = {
        "extensions": {"health_check": {}},
        "receivers": {
            "prometheus": {
                "config": {
                    "scrape_configs": [
                        {
                            "job_name": f"txoutbox-{service}",
                            "scrape_interval": f"{SCRAPE_SECONDS}s",
                            "static_configs": [
                                {"targets": [f"127.0.0.1:{scrape_port}"], "labels": {"Service": service}}
                            ],
                        }
                    ]
                }
            }
        },
        "processors": {"batch/metrics": {"timeout": "30s"}},
        "exporters": {
            "awsemf": {
                "namespace": NAMESPACE,
                "log_group_name": log_group_name,
                "log_stream_name": f"{service}/{{TaskId}}",
                "dimension_rollup_option": "NoDimensionRollup",
                "metric_declarations": [
                    {
                        "dimensions": [["Service"]],
                        "metric_name_selectors": [f"^{m}$" for m in EXPORTED_METRICS],
                    }
                ],
            }
        },
        "service": {
            "extensions": ["health_check"],
            "pipelines": {
                "metrics": {
                    "receivers": ["prometheus"],
                    "processors": ["batch/metrics"],
                    "exporters": ["awsemf"],
                }
            },
        },
    }
    return json.dumps(config, separators=(",", ":"))


def add_metrics_collector(
    scope: Construct,
    task_definition: ecs.FargateTaskDefinition,
    *,
    scrape_port: int,
    service: str,
    metrics_log_group: logs.LogGroup,
    log_group: logs.LogGroup,
) -> ecs.ContainerDefinition:
    """An ADOT collector sidecar exporting `service`'s Prometheus metrics to CloudWatch."""
    image = str(scope.node.try_get_context("adotImage") or ADOT_IMAGE)
    collector = task_definition.add_container(
        "metrics-collector",
        image=ecs.ContainerImage.from_registry(image),
        environment={
            "AOT_CONFIG_CONTENT": collector_config(
                scrape_port=scrape_port, service=service, log_group_name=metrics_log_group.log_group_name
            )
        },
        logging=ecs.LogDrivers.aws_logs(stream_prefix="metrics-collector", log_group=log_group),
        # the service keeps running without its collector; the alarms treat missing metrics as breaching
        essential=False,
        memory_reservation_mib=128,
    )
    metrics_log_group.grant_write(task_definition.task_role)
    return collector


def relay_metric(name: str, *, statistic: str = "Maximum") -> cloudwatch.Metric:
    """One of the relay's exported gauges (every relay reports the same table-wide figure: Maximum)."""
    return cloudwatch.Metric(
        namespace=NAMESPACE,
        metric_name=name,
        dimensions_map={"Service": "relay"},
        statistic=statistic,
        period=Duration.minutes(1),
    )


def scale_on_backlog(scaling: Any, steps: list[dict[str, int]]) -> None:
    """Step scaling of the relay service on the largest backlog any relay reports."""
    scaling.scale_on_metric(
        "BacklogScaling",
        metric=relay_metric("txoutbox_backlog"),
        scaling_steps=[appscaling.ScalingInterval(**step) for step in steps],
        adjustment_type=appscaling.AdjustmentType.CHANGE_IN_CAPACITY,
        cooldown=Duration.seconds(120),
        evaluation_periods=2,
        datapoints_to_alarm=2,
    )


class Alarms(Construct):
    """The alarms of the outbox (relay metrics) and of the queue (SQS metrics), to one SNS topic."""

    def __init__(self, scope: Construct, construct_id: str, *, base: BaseStack) -> None:
        super().__init__(scope, construct_id)
        self.topic = sns.Topic(self, "Topic", display_name="txoutbox alarms", enforce_ssl=True)
        email = self.node.try_get_context("alarmEmail")
        if email:
            self.topic.add_subscription(subscriptions.EmailSubscription(str(email)))
        action = cloudwatch_actions.SnsAction(self.topic)
        self.oldest_event_age = self._alarm(
            "OldestEventAge",
            relay_metric("txoutbox_oldest_event_age_seconds"),
            threshold=OLDEST_EVENT_AGE_ALARM_SECONDS,
            periods=3,
            # no relay reporting at all is as bad as a stuck outbox
            missing=cloudwatch.TreatMissingData.BREACHING,
            description="The oldest event waiting in the outbox is older than 5 minutes, or no relay reports",
        )
        self.circuit_open = self._alarm(
            "CircuitOpen",
            relay_metric("txoutbox_circuit_state"),
            threshold=1,  # 0 closed, 1 open, 2 half-open
            periods=2,
            missing=cloudwatch.TreatMissingData.NOT_BREACHING,
            description="A relay's circuit to SQS has been open (or half-open) for 2 minutes",
        )
        self.send_dead_letters = self._alarm(
            "OutboxDeadLetters",
            relay_metric("txoutbox_dead_letters"),
            threshold=1,
            periods=1,
            missing=cloudwatch.TreatMissingData.NOT_BREACHING,
            description="Events were dead-lettered on the sending side (txoutbox dead-letters list)",
        )
        self.dlq_depth = self._alarm(
            "DlqDepth",
            base.dlq.metric_approximate_number_of_messages_visible(
                period=Duration.minutes(1), statistic="Maximum"
            ),
            threshold=1,
            periods=1,
            missing=cloudwatch.TreatMissingData.NOT_BREACHING,
            description="Messages in flightDLQ.fifo: the payment service gave up on them",
        )
        self.queue_age = self._alarm(
            "QueueOldestMessageAge",
            base.queue.metric_approximate_age_of_oldest_message(
                period=Duration.minutes(1), statistic="Maximum"
            ),
            threshold=QUEUE_AGE_ALARM_SECONDS,
            periods=3,
            missing=cloudwatch.TreatMissingData.NOT_BREACHING,
            description="The oldest message in flightQueue.fifo is older than 5 minutes: payments lag",
        )
        for alarm in (
            self.oldest_event_age,
            self.circuit_open,
            self.send_dead_letters,
            self.dlq_depth,
            self.queue_age,
        ):
            alarm.add_alarm_action(action)
            alarm.add_ok_action(action)

    def _alarm(
        self,
        name: str,
        metric: cloudwatch.IMetric,
        *,
        threshold: float,
        periods: int,
        missing: cloudwatch.TreatMissingData,
        description: str,
    ) -> cloudwatch.Alarm:
        return cloudwatch.Alarm(
            self,
            name,
            metric=metric,
            threshold=threshold,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            evaluation_periods=periods,
            datapoints_to_alarm=periods,
            treat_missing_data=missing,
            alarm_description=description,
        )
