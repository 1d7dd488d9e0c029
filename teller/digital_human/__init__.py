"""The digital human: a talking avatar that answers common questions and hands over to a person."""
