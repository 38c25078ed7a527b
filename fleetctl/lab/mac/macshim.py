#!/usr/bin/python3 -S
