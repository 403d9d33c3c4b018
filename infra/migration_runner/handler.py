"""Custom resource (CDK Provider framework) that runs the migration task during a deployment.

`on_event` starts the one-off Fargate task (migrations, then the service roles: infra/database) on every
create and on every update (a new image or new role SQL is a new task definition, hence an update);
`is_complete` polls it until it stops, and fails the deployment unless every container exited 0, so the
services never start on a schema or roles older than their code. Delete does nothing: the database keeps
its schema. Runs on Lambda's Python runtime (boto3 included); no other dependency.
"""

from __future__ import annotations

from typing import Any

import boto3


def on_event(event: dict[str, Any], _context: Any) -> dict[str, Any]:
    props = event["ResourceProperties"]
    if event["RequestType"] == "Delete":
        return {"PhysicalResourceId": event["PhysicalResourceId"]}
    response = boto3.client("ecs").run_task(
        cluster=props["Cluster"],
        taskDefinition=props["TaskDefinitionArn"],
        launchType="FARGATE",
        count=1,
        startedBy="txoutbox-migration",
        networkConfiguration={
            "awsvpcConfiguration": {
                "subnets": props["Subnets"],
                "securityGroups": props["SecurityGroups"],
                "assignPublicIp": "DISABLED",
            }
        },
    )
    if response.get("failures") or not response.get("tasks"):
        raise RuntimeError(f"the migration task did not start: {response.get('failures')}")
    task_arn = response["tasks"][0]["taskArn"]
    # one physical id for the life of the resource: an update never asks CloudFormation to delete anything
    return {"PhysicalResourceId": "txoutbox-migration", "Data": {"TaskArn": task_arn}}


def is_complete(event: dict[str, Any], _context: Any) -> dict[str, Any]:
    if event["RequestType"] == "Delete":
        return {"IsComplete": True}
    task_arn = event["Data"]["TaskArn"]
    [task] = boto3.client("ecs").describe_tasks(
        cluster=event["ResourceProperties"]["Cluster"], tasks=[task_arn]
    )["tasks"]
    if task["lastStatus"] != "STOPPED":
        return {"IsComplete": False}
    exits = {c["name"]: c.get("exitCode") for c in task["containers"]}
    if any(code != 0 for code in exits.values()):
        raise RuntimeError(
            f"the migration task {task_arn} failed ({task.get('stoppedReason', 'no reason given')}); "
            f"exit codes {exits}; its log group is in the stack's outputs (MigrationLogGroupName)"
        )
    return {"IsComplete": True, "Data": {"TaskArn": task_arn}}
