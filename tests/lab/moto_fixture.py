#!/usr/bin/env python3
"""AWS fixtures for the lb kind's aws-elbv2 tests, against a local moto server.

    moto_fixture.py setup ENDPOINT   -> JSON: vpc, load balancer, blue and green target groups, listener
    moto_fixture.py show ENDPOINT TG LISTENER -> JSON: the target group's targets, the listener's target group
                                                (null while split) and its weights
    moto_fixture.py secret ENDPOINT NAME VALUE -> JSON: the secret's ARN (made, or its value replaced: a rotation)
"""
import json
import sys

import boto3


def client(name, endpoint):
    return boto3.client(name, endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def setup(endpoint):
    ec2, elb = client("ec2", endpoint), client("elbv2", endpoint)
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=f"us-east-1{z}")["Subnet"]["SubnetId"]
               for i, z in ((1, "a"), (2, "b"))]
    lb = elb.create_load_balancer(Name="web", Subnets=subnets)["LoadBalancers"][0]["LoadBalancerArn"]
    tg = {name: elb.create_target_group(Name=name, Protocol="HTTP", Port=80, VpcId=vpc, TargetType="ip")["TargetGroups"][0]["TargetGroupArn"]
          for name in ("blue", "green")}
    listener = elb.create_listener(LoadBalancerArn=lb, Protocol="HTTP", Port=80,
                                   DefaultActions=[{"Type": "forward", "TargetGroupArn": tg["blue"]}])["Listeners"][0]["ListenerArn"]
    print(json.dumps({"vpc": vpc, "load_balancer": lb, "blue": tg["blue"], "green": tg["green"], "listener": listener}))


def show(endpoint, tg, listener):
    elb = client("elbv2", endpoint)
    targets = [f"{d['Target']['Id']}:{d['Target'].get('Port')}={d['TargetHealth']['State']}"
               for d in elb.describe_target_health(TargetGroupArn=tg)["TargetHealthDescriptions"]]
    action = elb.describe_listeners(ListenerArns=[listener])["Listeners"][0]["DefaultActions"][0]
    # A split forwards to several target groups, each with its weight.
    groups = action.get("ForwardConfig", {}).get("TargetGroups", [])
    weights = {g["TargetGroupArn"]: g.get("Weight", 1) for g in groups}
    live = [arn for arn, w in weights.items() if w > 0]
    forward = action.get("TargetGroupArn") or (live[0] if len(live) == 1 else None)
    print(json.dumps({"targets": targets, "listener_forwards_to": forward, "weights": weights}))


def secret(endpoint, name, value):
    sm = client("secretsmanager", endpoint)
    try:
        arn = sm.create_secret(Name=name, SecretString=value)["ARN"]
    except sm.exceptions.ResourceExistsException:
        arn = sm.put_secret_value(SecretId=name, SecretString=value)["ARN"]
    print(json.dumps({"arn": arn}))


if __name__ == "__main__":
    {"setup": setup, "show": show, "secret": secret}[sys.argv[1]](*sys.argv[2:])
